"""f-divergences as torch functions, for f-GAN critics and for exact values (exact.py).

Convention (lecture; methods.md §2): P is the data, Q the model,

    D_f(P||Q) = E_q[ f(p(x)/q(x)) ],   f convex on u > 0, f(1) = 0 (the `gan` row: -log 4),

with the variational lower bound D_f >= sup_T E_p[T] - E_q[f*(T)], tight at T* = f'(p/q).
f-GAN (Nowozin, Cseke, Tomioka 2016, Table 2) writes the critic as T = g_f(v), v in R, where the
output activation g_f maps R into dom f*.

Normalisation of the JS rows (methods.md §2): `jensen_shannon` has no 1/2 in f, so its
D_f = 2 JSD (at most 2 log 2); `gan` gives D_f = 2 JSD - log 4.

Every function is elementwise and differentiable. `f` and `f_prime` take u > 0, `f_star` takes t
in dom f* (outside it the values are meaningless: nan or wrong), `activation` takes any real v.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod

import torch
from torch import Tensor
from torch.nn.functional import logsigmoid, softplus

from igm_cli.registry import DIVERGENCES

LOG2 = math.log(2.0)


def _log1mexp(t: Tensor) -> Tensor:
    """log(1 - e^t) for t < 0, accurate at both ends (Mächler 2012, "Accurately computing
    log(1 - exp(-|a|))": log(-expm1(t)) near 0, log1p(-exp(t)) below -log 2)."""
    return torch.where(t > -LOG2, torch.log(-torch.expm1(t)), torch.log1p(-torch.exp(t)))


class _LambertWExp(torch.autograd.Function):
    """w = W0(e^z) for real z: the root of w + log w = z, found by Newton's method in y = log w.

    In y the equation e^y + y = z is convex and increasing, so Newton's iterates come to the
    root from the right after the first step and never leave the real line. From the starting
    point (W(x) ~ log x - log log x for x > e, W(x) ~ x/(1 + x) below) five steps reach machine
    precision for every z we tried (-800..800, ±1e30); six are taken, with no data-dependent stop.
    """

    @staticmethod
    def forward(ctx, z: Tensor) -> Tensor:
        y = torch.where(z > 1, torch.log(z.clamp(min=1) - torch.log(z.clamp(min=1))), logsigmoid(z))
        for _ in range(6):
            y = y - (torch.exp(y) + y - z) / (torch.exp(y) + 1)  # Newton step on e^y + y - z
        w = torch.exp(y)
        ctx.save_for_backward(w)
        return w

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:
        (w,) = ctx.saved_tensors
        return grad * w / (1 + w)  # d W(e^z)/dz = W/(1 + W), from W'(x) = W/(x(1 + W))


def lambertw_exp(z: Tensor) -> Tensor:
    """W0(e^z) for any real z, without forming e^z (so z = 1000 is fine)."""
    return _LambertWExp.apply(z)


def lambertw(x: Tensor) -> Tensor:
    """Principal branch W0(x) of the Lambert W function (w e^w = x) for real x > 0."""
    return lambertw_exp(torch.log(x))


class Divergence(ABC):
    """One f-divergence D_f(P||Q) = E_q[f(p/q)], P = data, Q = model (see module docstring).

    Attributes: `name`, `description` (one line), `threshold` = f'(1) (the value of T* where
    p = q, the critic's decision threshold), `domain` = (low, high), the bounds of the open
    interval dom f* (math.inf where unbounded), and `reverse`, the name of the divergence whose
    generator is u f(1/u), so that D_f(P||Q) = D_reverse(Q||P).
    """

    name: str
    description: str
    threshold: float
    domain: tuple[float, float]
    reverse: str

    @abstractmethod
    def f(self, u: Tensor) -> Tensor:
        """Generator f(u), u > 0."""

    @abstractmethod
    def f_prime(self, u: Tensor) -> Tensor:
        """Derivative f'(u), u > 0: the optimal critic T*(x) = f'(p(x)/q(x))."""

    @abstractmethod
    def f_star(self, t: Tensor) -> Tensor:
        """Convex conjugate f*(t) = sup_u (u t - f(u)) for t in dom f*."""

    @abstractmethod
    def activation(self, v: Tensor) -> Tensor:
        """Output activation g_f: R -> dom f* (f-GAN Table 2)."""

    def f_star_of_activation(self, v: Tensor) -> Tensor:
        """f*(g_f(v)) for any real v, in a form that stays finite where the composition would
        round g_f(v) onto the edge of dom f*; training losses use this."""
        return self.f_star(self.activation(v))

    def f_of_log(self, r: Tensor) -> Tensor:
        """f(e^r) for a log density ratio r = log p - log q, finite wherever the true value is
        (e^r may underflow or overflow on the way)."""
        return self.f(torch.exp(r))


def _register(cls: type[Divergence]) -> type[Divergence]:
    return DIVERGENCES.register(cls.name, cls.description)(cls)


@_register
class KL(Divergence):
    name, reverse = "kl", "reverse_kl"
    description = "Kullback-Leibler KL(P||Q), f(u) = u log u"
    threshold, domain = 1.0, (-math.inf, math.inf)

    def f(self, u):
        return torch.xlogy(u, u)  # f-GAN Table 2, KL: u log u (0 at u = 0)

    def f_prime(self, u):
        return torch.log(u) + 1

    def f_star(self, t):
        return torch.exp(t - 1)  # f-GAN Table 2, KL

    def activation(self, v):
        return v  # f-GAN Table 2, KL: identity


@_register
class ReverseKL(Divergence):
    name, reverse = "reverse_kl", "kl"
    description = "reverse Kullback-Leibler KL(Q||P), f(u) = -log u"
    threshold, domain = -1.0, (-math.inf, 0.0)

    def f(self, u):
        return -torch.log(u)  # f-GAN Table 2, reverse KL

    def f_prime(self, u):
        return -1 / u

    def f_star(self, t):
        return -1 - torch.log(-t)  # f-GAN Table 2, reverse KL

    def activation(self, v):
        return -torch.exp(-v)  # f-GAN Table 2, reverse KL

    def f_star_of_activation(self, v):
        return v - 1  # -1 - log(e^-v)

    def f_of_log(self, r):
        return -r


@_register
class Pearson(Divergence):
    name, reverse = "pearson", "neyman"
    description = "Pearson chi-squared, f(u) = (u - 1)^2"
    threshold, domain = 0.0, (-math.inf, math.inf)

    def f(self, u):
        return (u - 1) ** 2  # f-GAN Table 2, Pearson χ²

    def f_prime(self, u):
        return 2 * (u - 1)

    def f_star(self, t):
        return t**2 / 4 + t  # f-GAN Table 2, Pearson χ²

    def activation(self, v):
        return v  # f-GAN Table 2, Pearson χ²: identity


@_register
class Neyman(Divergence):
    name, reverse = "neyman", "pearson"
    description = "Neyman chi-squared, f(u) = (1 - u)^2 / u"
    threshold, domain = 0.0, (-math.inf, 1.0)

    def f(self, u):
        return (1 - u) ** 2 / u  # f-GAN Table 2, Neyman χ²

    def f_prime(self, u):
        return 1 - u**-2

    def f_star(self, t):
        return 2 - 2 * torch.sqrt(1 - t)  # f-GAN Table 2, Neyman χ²

    def activation(self, v):
        return -torch.expm1(-v)  # f-GAN Table 2, Neyman χ²: 1 - e^-v

    def f_star_of_activation(self, v):
        return 2 - 2 * torch.exp(-v / 2)  # 2 - 2 sqrt(e^-v)

    def f_of_log(self, r):
        return (2 * torch.sinh(r / 2)) ** 2  # (1 - e^r)^2 / e^r = (e^(r/2) - e^(-r/2))^2


@_register
class SquaredHellinger(Divergence):
    name, reverse = "squared_hellinger", "squared_hellinger"
    description = "squared Hellinger, f(u) = (sqrt(u) - 1)^2"
    threshold, domain = 0.0, (-math.inf, 1.0)

    def f(self, u):
        return (torch.sqrt(u) - 1) ** 2  # f-GAN Table 2, squared Hellinger

    def f_prime(self, u):
        return 1 - torch.rsqrt(u)

    def f_star(self, t):
        return t / (1 - t)  # f-GAN Table 2, squared Hellinger

    def activation(self, v):
        return -torch.expm1(-v)  # f-GAN Table 2, squared Hellinger: 1 - e^-v

    def f_star_of_activation(self, v):
        return torch.expm1(v)  # (1 - e^-v) / e^-v


@_register
class Jeffrey(Divergence):
    name, reverse = "jeffrey", "jeffrey"
    description = "Jeffrey, KL(P||Q) + KL(Q||P), f(u) = (u - 1) log u"
    threshold, domain = 0.0, (-math.inf, math.inf)

    def f(self, u):
        return (u - 1) * torch.log(u)  # f-GAN Table 2, Jeffrey

    def f_prime(self, u):
        return torch.log(u) + 1 - 1 / u

    def f_star(self, t):
        # f-GAN Table 2, Jeffrey: W + 1/W + t - 2 with W = W0(e^(1-t)); 1/W = e^(W + t - 1)
        # (from W e^W = e^(1-t)) keeps the gradient finite when W underflows.
        w = lambertw_exp(1 - t)
        return w + torch.exp(w + t - 1) + t - 2

    def activation(self, v):
        return v  # f-GAN Table 2, Jeffrey: identity

    def f_of_log(self, r):
        return r * torch.expm1(r)


def _gan_f_of_log(r: Tensor) -> Tensor:
    """GAN generator u log u - (u + 1) log(u + 1) at u = e^r, as e^r log σ(r) + log σ(-r).
    e^r log σ(r) = -1 + O(e^-r), so clamping r at 40 changes nothing in float64; at the other
    end it is r e^r -> 0, and the clamp at -1000 (where e^r is 0 in float32 and float64)
    keeps r = -∞ (u = 0, e.g. a float32 softplus that underflowed) from giving 0 · (-∞) = nan."""
    rc = r.clamp(min=-1000.0, max=40.0)
    return torch.exp(rc) * logsigmoid(rc) + logsigmoid(-r)


@_register
class JensenShannon(Divergence):
    name, reverse = "jensen_shannon", "jensen_shannon"
    description = "Jensen-Shannon without the 1/2: D_f = 2 JSD (at most 2 log 2)"
    threshold, domain = 0.0, (-math.inf, LOG2)

    def f(self, u):
        # f-GAN Table 2, JS: u log u - (u + 1) log((1 + u)/2), whose two terms cancel at large u
        return self.f_of_log(torch.log(u))

    def f_prime(self, u):
        return LOG2 + torch.log(u) - torch.log1p(u)  # log(2u / (1 + u))

    def f_star(self, t):
        return -LOG2 - _log1mexp(t - LOG2)  # f-GAN Table 2, JS: -log(2 - e^t)

    def activation(self, v):
        return LOG2 + logsigmoid(v)  # f-GAN Table 2, JS: log 2 - log(1 + e^-v)

    def f_star_of_activation(self, v):
        return softplus(v) - LOG2  # -log(2 - 2σ(v)) = -log 2 - log σ(-v)

    def f_of_log(self, r):
        return _gan_f_of_log(r) + (torch.exp(r) + 1) * LOG2  # f_JS(u) = f_GAN(u) + (u + 1) log 2


@_register
class GAN(Divergence):
    name, reverse = "gan", "gan"
    description = "original GAN, f(u) = u log u - (u + 1) log(u + 1): D_f = 2 JSD - log 4"
    threshold, domain = -LOG2, (-math.inf, 0.0)

    def f(self, u):
        # f-GAN Table 2, GAN: u log u - (u + 1) log(u + 1), whose two terms cancel at large u
        return self.f_of_log(torch.log(u))

    def f_prime(self, u):
        return torch.log(u) - torch.log1p(u)  # log(u / (1 + u))

    def f_star(self, t):
        return -_log1mexp(t)  # f-GAN Table 2, GAN: -log(1 - e^t)

    def activation(self, v):
        return logsigmoid(v)  # f-GAN Table 2, GAN: -log(1 + e^-v)

    def f_star_of_activation(self, v):
        return softplus(v)  # -log(1 - σ(v)) = -log σ(-v)

    def f_of_log(self, r):
        return _gan_f_of_log(r)


@_register
class TotalVariation(Divergence):
    """dom f* is the closed interval [-1/2, 1/2] (both ends included), unlike the others;
    f is not differentiable at u = 1 and `f_prime` returns the subgradient 0 there."""

    name, reverse = "total_variation", "total_variation"
    description = "total variation, f(u) = |u - 1| / 2"
    threshold, domain = 0.0, (-0.5, 0.5)

    def f(self, u):
        return torch.abs(u - 1) / 2  # f-GAN Table 2, total variation

    def f_prime(self, u):
        return torch.sign(u - 1) / 2

    def f_star(self, t):
        return t  # f-GAN Table 2, total variation, on |t| <= 1/2

    def activation(self, v):
        return torch.tanh(v) / 2  # f-GAN Table 2, total variation


def get_divergence(name: str) -> Divergence:
    """A ready instance of the divergence registered as `name` (IgmError if unknown)."""
    return DIVERGENCES.get(name)()
