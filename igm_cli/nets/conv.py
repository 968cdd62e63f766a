"""Convolutional networks for square images: DCGAN (8, 32 or 64 px) and the CIFAR ResNet (32 or
64 px).

Both archs follow the interface of ``mlp``: constructed from the YAML keys of ``arch=NAME``,
they expose ``z_dim`` and ``build(role, data_shape)`` with data_shape = (C, H, W). Roles:

- ``generator``: z [B, z_dim] -> images [B, C, H, W] in [-1, 1] (tanh);
- ``critic``: images -> [B] (no output nonlinearity);
- ``feature_critic``: images -> [B, features] (MMD-GAN's learned kernel features);
- ``encoder``: images -> [B, z_dim] (Alpha-GAN; the critic's body, no output nonlinearity);
- ``code_critic``: codes [B, z_dim] -> [B] (an MLP without batch norm, as Alpha-GAN needs).

Critic roles (names ending in ``critic``) and the encoder never use batch norm: WGAN-GP's
penalty is per sample, and batch statistics would couple the samples. ``critic_norm=layer``
puts a GroupNorm(1, C) (layer norm over C, H, W) in their place. ``spectral_norm=true`` wraps
every conv and linear layer of the critic roles; generators and encoders never get it.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod

import torch
from torch import nn

from igm_cli.errors import IgmError
from igm_cli.nets.mlp import Reshape, mlp
from igm_cli.registry import ARCHS

RESOLUTIONS = (32, 64)
CRITIC_NORMS = ("none", "layer")
ROLES = ("generator", "critic", "feature_critic", "encoder", "code_critic")


def either(choices) -> str:
    """'a, b or c' from the choices."""
    *first, last = list(choices)
    return f"{', '.join(first)} or {last}" if first else last


def critic_norm_layer(kind: str, channels: int) -> nn.Module:
    """The critic's normalisation: none, or layer norm over (C, H, W) as GroupNorm(1, C)."""
    return nn.GroupNorm(1, channels) if kind == "layer" else nn.Identity()


def add_spectral_norm(net: nn.Module) -> nn.Module:
    """Miyato et al. 2018: every conv and linear weight divided by its top singular value
    (estimated by one power iteration per training-mode forward pass)."""
    layers = [m for m in net.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    for layer in layers:
        nn.utils.parametrizations.spectral_norm(layer)
    return net


class SumPool(nn.Module):
    """Global sum pooling over the spatial dimensions: [B, C, H, W] -> [B, C]."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.sum(dim=(2, 3))


class ConvArch(ABC):
    """What DCGAN and ResNet share: key checks, roles, the code critic and spectral norm.
    Subclasses provide ``generator(c, size)`` and ``critic_body(c, size) -> (body, width)``,
    a network from images to [B, width] features."""

    name = ""
    resolutions = RESOLUTIONS  # the image sides it builds for

    def __init__(self, z_dim: int, channels: int, features: int, spectral_norm: bool,
                 critic_norm: str, code_hidden: int, code_depth: int):
        for key, value in (("z_dim", z_dim), ("channels", channels), ("features", features),
                           ("code_hidden", code_hidden), ("code_depth", code_depth)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise IgmError(f"arch.{key} must be an integer >= 1, got {value!r}")
        if not isinstance(spectral_norm, bool):
            raise IgmError(f"arch.spectral_norm must be true or false, got {spectral_norm!r}")
        if critic_norm not in CRITIC_NORMS:
            raise IgmError(f"unknown arch.critic_norm '{critic_norm}'; "
                           f"choose from: {', '.join(CRITIC_NORMS)}")
        self.z_dim, self.channels, self.features = z_dim, channels, features
        self.spectral_norm, self.critic_norm = spectral_norm, critic_norm
        self.code_hidden, self.code_depth = code_hidden, code_depth

    def image_size(self, data_shape: tuple[int, ...]) -> tuple[int, int]:
        """(channels, resolution) of square images, or a one-line IgmError."""
        shape = tuple(int(s) for s in data_shape)
        sizes = self.resolutions
        if len(shape) != 3 or shape[0] < 1 or shape[1] != shape[2] or shape[1] not in sizes:
            shapes = either(f"(C, {r}, {r})" for r in sizes)
            raise IgmError(f"arch={self.name} needs images of shape {shapes} (dataset.resolution "
                           f"{either(map(str, sizes))}), got data shape {shape}")
        return shape[0], shape[1]

    def build(self, role: str, data_shape: tuple[int, ...]) -> nn.Module:
        if role not in ROLES:
            raise IgmError(f"arch={self.name} has no role '{role}'; "
                           f"choose from: {', '.join(ROLES)}")
        c, size = self.image_size(data_shape)
        if role == "generator":
            return self.generator(c, size)
        if role == "code_critic":  # leaky-ReLU MLP on the code, default init, no batch norm
            net = nn.Sequential(mlp(self.z_dim, 1, self.code_hidden, self.code_depth,
                                    "leaky_relu", False), nn.Flatten(0))
        else:
            body, width = self.critic_body(c, size)
            out = {"critic": 1, "feature_critic": self.features, "encoder": self.z_dim}[role]
            net = nn.Sequential(body, self.head(width, out))
            if role == "critic":
                net.append(nn.Flatten(0))  # [B, 1] -> [B]
        if self.spectral_norm and role.endswith("critic"):
            add_spectral_norm(net)
        return net

    def head(self, width: int, out: int) -> nn.Linear:
        return nn.Linear(width, out)

    @abstractmethod
    def generator(self, c: int, size: int) -> nn.Module:
        """z [B, z_dim] -> images [B, c, size, size] in [-1, 1]."""

    @abstractmethod
    def critic_body(self, c: int, size: int) -> tuple[nn.Module, int]:
        """images [B, c, size, size] -> features [B, width], and that width."""


# --------------------------------------------------------------------------------------------
# DCGAN (Radford et al. 2016)


def dcgan_init(net: nn.Module) -> nn.Module:
    """DCGAN's initialisation: conv and linear weights N(0, 0.02), batch-norm scales
    N(1, 0.02), every bias 0."""
    for m in net.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            nn.init.normal_(m.weight, 0.0, 0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)
    return net


@ARCHS.register("dcgan", "DCGAN conv generator and critic for 8, 32 or 64 px images")
class DCGANArch(ConvArch):
    """DCGAN (Radford et al. 2016) for 32x32 or 64x64 images, and 8x8 (Stacked Digits' native
    size), where the smallest map is 2x2 instead of 4x4 so that the nets keep two stride-2 layers.

    Generator: linear z -> 4x4 x W (W = channels*4 at 32 px, channels*8 at 64 px; 2x2 x
    channels*2 at 8 px), batch norm, ReLU; stride-2 4x4 transposed convs halving the width,
    each with batch norm and ReLU, up to half the resolution at width ``channels``; a last
    stride-2 transposed conv to the image's channels, tanh. Critic / encoder / feature critic:
    the mirror image, stride-2 4x4 convs (widths channels, 2*channels, ... to 4x4, or 2x2) with
    LeakyReLU(0.2), ``critic_norm`` after every conv but the first, then a linear layer from
    the flattened last map to the output.
    Initialisation: DCGAN's N(0, 0.02) (the code critic keeps PyTorch's default)."""

    name = "dcgan"
    resolutions = (8, 32, 64)

    def __init__(self, z_dim: int = 128, channels: int = 64, features: int = 16,
                 spectral_norm: bool = False, critic_norm: str = "none",
                 code_hidden: int = 750, code_depth: int = 3):
        super().__init__(z_dim, channels, features, spectral_norm, critic_norm,
                         code_hidden, code_depth)

    @staticmethod
    def layout(size: int) -> tuple[int, int]:
        """(side of the smallest feature map, stride-2 layers from it to ``size``): (4, 3) at
        32 px and (4, 4) at 64 px (DCGAN's 4x4), (2, 2) at 8 px."""
        stem = 2 if size == 8 else 4
        return stem, int(math.log2(size // stem))

    def generator(self, c: int, size: int) -> nn.Module:
        stem, steps = self.layout(size)
        width = self.channels * 2 ** (steps - 1)
        layers: list[nn.Module] = [
            nn.Linear(self.z_dim, width * stem * stem, bias=False),  # no bias before BN
            Reshape((width, stem, stem)), nn.BatchNorm2d(width), nn.ReLU(),
        ]
        for _ in range(steps - 1):
            layers += [nn.ConvTranspose2d(width, width // 2, 4, 2, 1, bias=False),
                       nn.BatchNorm2d(width // 2), nn.ReLU()]
            width //= 2
        layers += [nn.ConvTranspose2d(width, c, 4, 2, 1), nn.Tanh()]
        return dcgan_init(nn.Sequential(*layers))

    def critic_body(self, c: int, size: int) -> tuple[nn.Module, int]:
        stem, steps = self.layout(size)
        layers: list[nn.Module] = []
        width_in, width = c, self.channels
        for i in range(steps):
            norm = critic_norm_layer(self.critic_norm, width) if i > 0 else nn.Identity()
            layers += [nn.Conv2d(width_in, width, 4, 2, 1), norm, nn.LeakyReLU(0.2)]
            width_in, width = width, width * 2
        layers = [m for m in layers if not isinstance(m, nn.Identity)]
        return dcgan_init(nn.Sequential(*layers, nn.Flatten())), width_in * stem * stem

    def head(self, width: int, out: int) -> nn.Linear:
        return dcgan_init(nn.Linear(width, out))


# --------------------------------------------------------------------------------------------
# ResNet (Gulrajani et al. 2017, Miyato et al. 2018: the CIFAR-10 model)


def xavier(layer: nn.Module, gain: float = 1.0) -> nn.Module:
    nn.init.xavier_uniform_(layer.weight, gain)
    if layer.bias is not None:
        nn.init.zeros_(layer.bias)
    return layer


def conv3(c_in: int, c_out: int) -> nn.Conv2d:
    """3x3 conv inside a residual branch (followed by a ReLU path): Xavier gain sqrt(2)."""
    return xavier(nn.Conv2d(c_in, c_out, 3, 1, 1), math.sqrt(2))


def conv1(c_in: int, c_out: int) -> nn.Conv2d:
    """1x1 shortcut conv: Xavier gain 1."""
    return xavier(nn.Conv2d(c_in, c_out, 1, 1, 0))


class Residual(nn.Module):
    """x -> branch(x) + shortcut(x)."""

    def __init__(self, branch: nn.Module, shortcut: nn.Module):
        super().__init__()
        self.branch, self.shortcut = branch, shortcut

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.branch(x) + self.shortcut(x)


def up_block(c_in: int, c_out: int) -> Residual:
    """Generator block: BN, ReLU, nearest x2, 3x3 conv, BN, ReLU, 3x3 conv; shortcut:
    nearest x2 and a 1x1 conv."""
    branch = nn.Sequential(nn.BatchNorm2d(c_in), nn.ReLU(), nn.Upsample(scale_factor=2),
                           conv3(c_in, c_out), nn.BatchNorm2d(c_out), nn.ReLU(),
                           conv3(c_out, c_out))
    return Residual(branch, nn.Sequential(nn.Upsample(scale_factor=2), conv1(c_in, c_out)))


def first_down_block(c_in: int, c_out: int, norm: str) -> Residual:
    """The critic's "optimized" first block (no activation before its first conv): 3x3 conv,
    ReLU, 3x3 conv, 2x2 average pool; shortcut: 2x2 average pool, then a 1x1 conv."""
    branch = nn.Sequential(conv3(c_in, c_out), critic_norm_layer(norm, c_out), nn.ReLU(),
                           conv3(c_out, c_out), nn.AvgPool2d(2))
    return Residual(branch, nn.Sequential(nn.AvgPool2d(2), conv1(c_in, c_out)))


def down_block(c_in: int, c_out: int, norm: str, downsample: bool) -> Residual:
    """Critic block: ReLU, 3x3 conv, ReLU, 3x3 conv (then a 2x2 average pool when
    downsampling); shortcut: 1x1 conv and average pool when downsampling (or when the width
    changes), else the identity. ``norm`` goes before each ReLU."""
    branch = [critic_norm_layer(norm, c_in), nn.ReLU(), conv3(c_in, c_out),
              critic_norm_layer(norm, c_out), nn.ReLU(), conv3(c_out, c_out)]
    shortcut: list[nn.Module] = [conv1(c_in, c_out)] if downsample or c_in != c_out else []
    if downsample:
        branch.append(nn.AvgPool2d(2))
        shortcut.append(nn.AvgPool2d(2))
    return Residual(nn.Sequential(*branch), nn.Sequential(*shortcut))


@ARCHS.register("resnet", "SN-GAN / WGAN-GP CIFAR ResNet generator and critic (32 or 64 px)")
class ResNetArch(ConvArch):
    """The CIFAR-10 ResNet of WGAN-GP (Gulrajani et al. 2017) and SN-GAN (Miyato et al. 2018).

    Generator: linear z -> 4x4 x channels; three up-sampling residual blocks to 32x32 (four to
    64x64); BN, ReLU, 3x3 conv to the image's channels, tanh. Critic: the optimized first down
    block, down blocks to 8x8 (one at 32 px, two at 64 px), two blocks without downsampling,
    ReLU, global sum pooling, linear to the output. Encoder and feature critic: the same body
    with a z_dim- or features-wide linear head. One width ``channels`` (default 128, WGAN-GP's)
    for every block of every role; SN-GAN's generator used 256 (``channels=256`` widens both).
    Initialisation: Xavier-uniform, gain sqrt(2) for the 3x3 convs of residual branches and 1
    for shortcuts, input and output layers; biases 0 (the code critic keeps PyTorch's default)."""

    name = "resnet"

    def __init__(self, z_dim: int = 128, channels: int = 128, features: int = 16,
                 spectral_norm: bool = False, critic_norm: str = "none",
                 code_hidden: int = 750, code_depth: int = 3):
        super().__init__(z_dim, channels, features, spectral_norm, critic_norm,
                         code_hidden, code_depth)

    def generator(self, c: int, size: int) -> nn.Module:
        ch = self.channels
        blocks = [up_block(ch, ch) for _ in range(int(math.log2(size // 4)))]
        return nn.Sequential(xavier(nn.Linear(self.z_dim, ch * 16)), Reshape((ch, 4, 4)),
                             *blocks, nn.BatchNorm2d(ch), nn.ReLU(),
                             xavier(nn.Conv2d(ch, c, 3, 1, 1)), nn.Tanh())

    def critic_body(self, c: int, size: int) -> tuple[nn.Module, int]:
        ch, norm = self.channels, self.critic_norm
        downs = int(math.log2(size // 8)) - 1  # after the first block: 1 at 32 px, 2 at 64 px
        blocks = [first_down_block(c, ch, norm)]
        blocks += [down_block(ch, ch, norm, downsample=True) for _ in range(downs)]
        blocks += [down_block(ch, ch, norm, downsample=False) for _ in range(2)]
        return nn.Sequential(*blocks, nn.ReLU(), SumPool()), ch

    def head(self, width: int, out: int) -> nn.Linear:
        return xavier(nn.Linear(width, out))
