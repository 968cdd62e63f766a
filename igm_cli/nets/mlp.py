"""Fully connected networks for low-dimensional data (and flattened images)."""

from __future__ import annotations

import math

import torch
from torch import nn

from igm_cli.errors import IgmError
from igm_cli.registry import ARCHS

ACTIVATIONS = {"leaky_relu": lambda: nn.LeakyReLU(0.2), "relu": nn.ReLU, "tanh": nn.Tanh}


def mlp(
    in_dim: int, out_dim: int, hidden: int, depth: int, activation: str, spectral_norm: bool
) -> nn.Sequential:
    """``depth`` hidden layers of width ``hidden``, then a linear output layer."""
    widths = [in_dim] + [hidden] * depth
    layers: list[nn.Module] = []
    for a, b in zip(widths[:-1], widths[1:]):
        layers += [nn.Linear(a, b), ACTIVATIONS[activation]()]
    layers.append(nn.Linear(widths[-1], out_dim))
    if spectral_norm:  # Miyato et al. 2018: every weight divided by its top singular value
        for i, layer in enumerate(layers):
            if isinstance(layer, nn.Linear):
                layers[i] = nn.utils.parametrizations.spectral_norm(layer)
    return nn.Sequential(*layers)


class Reshape(nn.Module):
    def __init__(self, shape: tuple[int, ...]):
        super().__init__()
        self.shape = shape

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.reshape(x.shape[0], *self.shape)


@ARCHS.register("mlp", "fully connected generator and critic (LeakyReLU, optional spectral norm)")
class MLPArch:
    """Builds each role's network. Roles: generator z -> x, critic x -> R, encoder x -> z,
    code_critic z -> R, feature_critic x -> R^features (MMD-GAN's learned kernel features).
    Spectral norm (``spectral_norm=true``) applies to critics only; ``critic_hidden`` gives
    the critics their own width (None: ``hidden``).

    ``z_dim`` and ``hidden`` may be ``auto`` (``AUTO``, resolved from the data's shape by
    ``build_arch``): points of D dimensions get noise of max(2, D) dimensions (a generator of
    2-D noise cannot cover a 4-D shell: README, "Robustness") and 128 units; flattened images
    get 64-D noise and 512 units (Stacked Digits: 2-D noise and 128 units collapse to 5 modes).
    A generator of images ends in tanh: pixels live in [-1, 1], as the conv archs' do."""

    AUTO = {
        "z_dim": lambda shape: 64 if len(shape) == 3 else max(2, math.prod(shape)),
        "hidden": lambda shape: 512 if len(shape) == 3 else 128,
    }

    def __init__(
        self,
        z_dim: int = 2,
        hidden: int = 128,
        depth: int = 3,
        activation: str = "leaky_relu",
        spectral_norm: bool = False,
        features: int = 16,
        critic_hidden: int | None = None,
    ):
        if activation not in ACTIVATIONS:
            raise IgmError(
                f"unknown arch.activation '{activation}'; choose from: {', '.join(ACTIVATIONS)}"
            )
        self.z_dim, self.hidden, self.depth = z_dim, hidden, depth
        self.activation, self.spectral_norm = activation, spectral_norm
        self.features = features  # output width of the feature_critic role
        self.critic_hidden = critic_hidden or hidden  # the critics' width; None: ``hidden``

    def build(self, role: str, data_shape: tuple[int, ...]) -> nn.Module:
        data_dim = math.prod(data_shape)
        in_dim, out_dim = {
            "generator": (self.z_dim, data_dim),
            "critic": (data_dim, 1),
            "encoder": (data_dim, self.z_dim),
            "code_critic": (self.z_dim, 1),
            "feature_critic": (data_dim, self.features),
        }[role]
        critic = role.endswith("critic")
        net = mlp(in_dim, out_dim, self.critic_hidden if critic else self.hidden, self.depth,
                  self.activation, self.spectral_norm and critic)
        if role == "generator":
            squash = [nn.Tanh()] if len(data_shape) == 3 else []  # images live in [-1, 1]
            return nn.Sequential(net, *squash, Reshape(data_shape))
        if role == "critic":
            return nn.Sequential(nn.Flatten(), net, nn.Flatten(0))  # [B, ...] -> [B]
        if role == "code_critic":
            return nn.Sequential(net, nn.Flatten(0))
        return nn.Sequential(nn.Flatten(), net)


class Affine(nn.Module):
    """x = μ + σ ⊙ z with learnable μ and log σ (z has the data's dimension)."""

    def __init__(self, dim: int):
        super().__init__()
        self.mu = nn.Parameter(torch.zeros(dim))
        self.log_sigma = nn.Parameter(torch.zeros(dim))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.mu + self.log_sigma.exp() * z


@ARCHS.register("gaussian_affine", "generator μ + σz (a Gaussian model); MLP critics")
class GaussianAffineArch(MLPArch):
    """The f-GAN paper's mixture experiment: Q is a single Gaussian N(μ, σ²). The noise has
    the data's dimension (``z_dim`` must equal it; ``auto`` takes it); critics are MLPs as in
    ``mlp``."""

    AUTO = {"z_dim": lambda shape: math.prod(shape)}

    def __init__(self, z_dim: int = 1, hidden: int = 64, depth: int = 2,
                 activation: str = "tanh", spectral_norm: bool = False):
        super().__init__(z_dim, hidden, depth, activation, spectral_norm)

    def build(self, role: str, data_shape: tuple[int, ...]) -> nn.Module:
        if role != "generator":
            return super().build(role, data_shape)
        if data_shape != (self.z_dim,):
            raise IgmError(f"arch=gaussian_affine needs arch.z_dim equal to the data dimension "
                           f"{math.prod(data_shape)}, got {self.z_dim}")
        return Affine(self.z_dim)
