"""f-divergence generators, conjugates and activations (igm_cli/divergences.py) against the
f-GAN table in methods.md §2 and against their definitions, in float64."""

import math

import numpy as np
import pytest
import scipy.special
import torch

from igm_cli.divergences import Divergence, get_divergence, lambertw, lambertw_exp
from igm_cli.errors import IgmError
from igm_cli.registry import DIVERGENCES

NAMES = ["kl", "reverse_kl", "pearson", "neyman", "squared_hellinger", "jensen_shannon", "gan",
         "total_variation", "jeffrey"]
F64 = torch.float64


def grid(lo, hi, n, log=False):
    return torch.logspace(lo, hi, n, dtype=F64) if log else torch.linspace(lo, hi, n, dtype=F64)


@pytest.fixture(params=NAMES)
def div(request) -> Divergence:
    return get_divergence(request.param)


def test_registry_holds_the_nine_divergences():
    assert DIVERGENCES.names() == sorted(NAMES)
    for name in NAMES:
        d = get_divergence(name)
        assert isinstance(d, Divergence) and d.name == name
        assert dict(DIVERGENCES.describe())[name] == d.description
    with pytest.raises(IgmError, match="unknown divergence 'chi'"):
        get_divergence("chi")


def test_f_at_one(div):
    """f(1) = 0, except the GAN row, whose f(1) = -log 4 makes D_f = 2 JSD - log 4."""
    expected = -math.log(4) if div.name == "gan" else 0.0
    assert div.f(torch.ones(1, dtype=F64)).item() == pytest.approx(expected, abs=1e-15)


TABLE_F = {  # methods.md §2, in numpy
    "kl": lambda u: u * np.log(u),
    "reverse_kl": lambda u: -np.log(u),
    "pearson": lambda u: (u - 1) ** 2,
    "neyman": lambda u: (1 - u) ** 2 / u,
    "squared_hellinger": lambda u: (np.sqrt(u) - 1) ** 2,
    "jeffrey": lambda u: (u - 1) * np.log(u),
    "jensen_shannon": lambda u: -(u + 1) * np.log((1 + u) / 2) + u * np.log(u),
    "gan": lambda u: u * np.log(u) - (u + 1) * np.log(u + 1),
    "total_variation": lambda u: np.abs(u - 1) / 2,
}


def test_f_matches_the_table(div):
    u = grid(-2, 2, 101, log=True)
    expected = torch.from_numpy(TABLE_F[div.name](u.numpy()))
    torch.testing.assert_close(div.f(u), expected, rtol=1e-12, atol=1e-14)


def test_f_is_convex(div):
    u = grid(1e-3, 20, 4001)
    y = div.f(u)
    second_diff = y[:-2] - 2 * y[1:-1] + y[2:]
    assert (second_diff >= -1e-12 * (1 + y[1:-1].abs())).all()


def test_f_prime_is_the_derivative_of_f(div):
    u = grid(-3, 3, 301, log=True).requires_grad_()
    (grad,) = torch.autograd.grad(div.f(u).sum(), u)
    torch.testing.assert_close(div.f_prime(u.detach()), grad, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("name, value", [
    ("kl", 1.0), ("reverse_kl", -1.0), ("gan", -math.log(2)), ("pearson", 0.0), ("neyman", 0.0),
    ("squared_hellinger", 0.0), ("jensen_shannon", 0.0), ("total_variation", 0.0),
    ("jeffrey", 0.0)])
def test_threshold_is_f_prime_at_one(name, value):
    d = get_divergence(name)
    assert d.threshold == pytest.approx(value, abs=1e-15)
    assert d.f_prime(torch.ones(1, dtype=F64)).item() == pytest.approx(value, abs=1e-15)


def test_f_star_is_the_convex_conjugate(div):
    """f*(t) = sup_u (u t - f(u)), the sup taken on a fine log grid of u containing the
    maximiser u* (t = f'(u*) for u* in [0.05, 20]; TV: t inside [-1/2, 1/2], u* = 1)."""
    if div.name == "total_variation":
        t = grid(-0.5, 0.5, 41)
    else:
        t = div.f_prime(grid(math.log10(0.05), math.log10(20), 41, log=True))
    u = torch.cat([grid(-2.5, 2.5, 50_001, log=True), torch.ones(1, dtype=F64)])
    sup = (t[:, None] * u - div.f(u)).max(dim=1).values
    torch.testing.assert_close(div.f_star(t), sup, rtol=1e-6, atol=1e-6)


def test_fenchel_young_equality(div):
    """f(u) + f*(f'(u)) = u f'(u); for TV f' is the subgradient ½ sign(u - 1), 0 at u = 1."""
    u = torch.cat([grid(-2, 2, 201, log=True), torch.ones(1, dtype=F64)])
    t = div.f_prime(u)
    torch.testing.assert_close(div.f(u) + div.f_star(t), u * t, rtol=1e-10, atol=1e-10)


def test_activation_maps_into_dom_f_star(div):
    low, high = div.domain
    v = grid(-50, 50, 1001)
    t = div.activation(v)
    assert ((t >= low) & (t <= high)).all()  # closed: rounding may reach the edge at |v| = 50
    moderate = v.abs() <= 30
    if div.name != "total_variation":  # TV's dom f* = [-1/2, 1/2] is closed
        assert ((t[moderate] > low) & (t[moderate] < high)).all()


def test_f_star_of_activation_is_stable(div):
    v = grid(-50, 50, 1001).requires_grad_()
    y = div.f_star_of_activation(v)
    (grad,) = torch.autograd.grad(y.sum(), v)
    assert torch.isfinite(y).all() and torch.isfinite(grad).all()
    v = v.detach()
    naive = div.f_star(div.activation(v))
    where = (v.abs() <= 20) & torch.isfinite(naive)
    assert where.sum() >= 400
    torch.testing.assert_close(y.detach()[where], naive[where], rtol=1e-6, atol=1e-9)


def test_f_of_log_is_f_of_exp(div):
    r = grid(-30, 30, 601)
    torch.testing.assert_close(div.f_of_log(r), div.f(torch.exp(r)), rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("name, limit", [
    ("kl", 0.0), ("reverse_kl", 800.0), ("pearson", 1.0), ("neyman", math.inf),
    ("squared_hellinger", 1.0), ("jeffrey", 800.0), ("jensen_shannon", math.log(2)),
    ("gan", 0.0), ("total_variation", 0.5)])
def test_f_of_log_where_exp_underflows(name, limit):
    """f(e^-800), e^-800 being 0 in float64; at r = +800 (overflow) the value is not nan."""
    d = get_divergence(name)
    assert d.f_of_log(torch.tensor([-800.0], dtype=F64)).item() == pytest.approx(limit, rel=1e-12)
    assert not torch.isnan(d.f_of_log(torch.tensor([800.0], dtype=F64))).any()


def test_reverse_generator(div):
    """The `reverse` divergence has generator u f(1/u)."""
    u = grid(-3, 3, 121, log=True)
    rev = get_divergence(div.reverse)
    torch.testing.assert_close(rev.f(u), u * div.f(1 / u), rtol=1e-10, atol=1e-12)
    assert rev.reverse == div.name


def test_lambertw_matches_scipy():
    x = grid(-8, 8, 1601, log=True)
    expected = torch.from_numpy(scipy.special.lambertw(x.numpy()).real)
    torch.testing.assert_close(lambertw(x), expected, rtol=1e-6, atol=0)
    assert (lambertw(x) / expected - 1).abs().max() < 1e-13


def test_lambertw_extreme_arguments_and_gradient():
    z = torch.tensor([-700.0, 0.0, 1.0, 1000.0, 1e30], dtype=F64)
    w = lambertw_exp(z)
    torch.testing.assert_close(w + torch.log(w), z, rtol=1e-14, atol=1e-14)  # W e^W = e^z
    assert w[2].item() == pytest.approx(1.0, rel=1e-15)  # W(e) = 1
    assert lambertw_exp(torch.tensor(-1000.0, dtype=F64)).item() == 0.0  # e^-1000 underflows
    x = torch.tensor([1e-3, 0.3, 1.0, 7.0, 100.0], dtype=F64, requires_grad=True)
    assert torch.autograd.gradcheck(lambertw, (x,))


def test_jeffrey_conjugate_in_float32_at_the_ends():
    """The Lambert-W conjugate stays finite, with a finite gradient 1/W, at v = ±50 in float32."""
    v = torch.tensor([-50.0, 0.0, 50.0], requires_grad=True)
    y = get_divergence("jeffrey").f_star_of_activation(v)
    (grad,) = torch.autograd.grad(y.sum(), v)
    assert torch.isfinite(y).all() and torch.isfinite(grad).all()
    expected = np.exp(49.0)  # f*'(t) = 1/W(e^(1-t)) ≈ e^(t-1) for large t
    assert grad[2].item() == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("dtype", [torch.float32, F64])
def test_f_at_zero_is_its_limit(div, dtype):
    """f(0) = lim_{u->0} f(u) (estimate.F_LIMITS), also through f_of_log(-inf), in both float
    types: u = 0 is what a float32 softplus(v) gives for v below about -104. JS and GAN gave
    nan (e^-inf · log σ(-inf) = 0 · -inf); their limits are log 2 and 0."""
    from igm_cli.estimate import F_LIMITS

    limit = F_LIMITS[div.name][0]  # math.inf for reverse KL, Neyman, Jeffrey
    zero = torch.zeros(1, dtype=dtype)
    assert div.f(zero).item() == pytest.approx(limit, rel=1e-6)
    assert div.f_of_log(torch.full((1,), -math.inf, dtype=dtype)).item() == pytest.approx(
        limit, rel=1e-6)
    underflow = torch.nn.functional.softplus(torch.tensor([-200.0]))  # float32: exactly 0
    assert div.f(underflow.to(dtype)).item() == pytest.approx(limit, rel=1e-6)
