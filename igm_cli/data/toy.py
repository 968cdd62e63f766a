"""Low-dimensional distributions for the mode-coverage benchmarks and for quick experiments.

Every data set here is a ``ToyDistribution``: ``sample(n, generator)`` draws fresh points on the
generator's device, so training needs no DataLoader and a resumed run continues the same stream
once the generator's state is restored. Distributions made of Gaussian modes also carry their
``centers`` and ``stds`` for the mode metrics (igm_cli/metrics/toy.py).
"""

from __future__ import annotations

import copy
import math
from abc import ABC, abstractmethod
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from igm_cli.errors import IgmError
from igm_cli.registry import DATASETS


class ToyDistribution(ABC):
    """A distribution we can sample from; ``centers`` [k, d] and ``stds`` [k] when it has modes."""

    def __init__(self, dim: int, device: torch.device | str = "cpu"):
        self.dim = dim
        self.device = torch.device(device)
        self.centers: Tensor | None = None
        self.stds: Tensor | None = None
        self.weights: Tensor | None = None

    @abstractmethod
    def sample(self, n: int, generator: torch.Generator) -> Tensor:  # [n, dim]
        ...

    def fixed_sample(self, n: int, seed: int) -> Tensor:
        """n points drawn on the CPU from ``seed``, then moved: the same points on every device
        (evaluation data, held-out points)."""
        twin = copy.copy(self)
        twin.device = torch.device("cpu")
        for key, value in vars(self).items():
            if isinstance(value, Tensor):
                setattr(twin, key, value.cpu())
        return twin.sample(n, torch.Generator().manual_seed(seed)).to(self.device)

    is_image = False

    @property
    def shape(self) -> tuple[int]:
        return (self.dim,)

    @property
    def has_modes(self) -> bool:
        return self.centers is not None

    @property
    def modes_total(self) -> int | None:
        """The number of modes (for "modes 8/8"), when known."""
        return len(self.centers) if self.centers is not None else None


class GaussianModes(ToyDistribution):
    """A mixture of isotropic Gaussians: pick a mode by its weight, add std * N(0, I)."""

    def __init__(self, centers, stds, weights=None, device="cpu"):
        centers = torch.as_tensor(centers, dtype=torch.float32, device=device)
        super().__init__(centers.shape[1], device)
        k = centers.shape[0]
        self.centers = centers
        self.stds = torch.as_tensor(stds, dtype=torch.float32, device=device).expand(k).clone()
        weights = torch.full((k,), 1.0 / k) if weights is None else torch.as_tensor(weights)
        self.weights = weights.to(device=device, dtype=torch.float32)

    def sample(self, n: int, generator: torch.Generator) -> Tensor:
        mode = torch.multinomial(self.weights, n, replacement=True, generator=generator)
        noise = torch.randn(n, self.dim, generator=generator, device=self.device)
        return self.centers[mode] + self.stds[mode, None] * noise


@DATASETS.register("ring8", "8 Gaussians on a circle (radius 2, std 0.02)")
def ring8(radius: float = 2.0, std: float = 0.02, n_modes: int = 8, device="cpu"):
    # Angles 2πk/8 for k = 0..7; linspace(0, 2π, 8) would put two modes on top of each other.
    angles = 2 * math.pi * torch.arange(n_modes) / n_modes
    centers = radius * torch.stack([angles.cos(), angles.sin()], dim=1)
    return GaussianModes(centers, std, device=device)


@DATASETS.register("grid25", "5x5 grid of Gaussians at {-4,-2,0,2,4}^2 (std 0.05)")
def grid25(spacing: float = 2.0, std: float = 0.05, size: int = 5, device="cpu"):
    ticks = spacing * (torch.arange(size) - (size - 1) / 2)
    centers = torch.cartesian_prod(ticks, ticks)
    return GaussianModes(centers, std, device=device)


@DATASETS.register("gaussian_mixture_1d", "1D mixture of Gaussians (weights, locs, scales)")
def gaussian_mixture_1d(weights=(0.5, 0.5), locs=(-2.0, 2.0), scales=(0.5, 0.5), device="cpu"):
    weights, locs, scales = (list(map(float, v)) for v in (weights, locs, scales))
    if not len(weights) == len(locs) == len(scales) or not weights:
        raise IgmError(
            f"dataset.weights, dataset.locs and dataset.scales must have the same length, "
            f"got {len(weights)}, {len(locs)} and {len(scales)}"
        )
    if min(scales) <= 0:
        raise IgmError(f"dataset.scales must be positive, got {scales}")
    if min(weights) < 0 or abs(sum(weights) - 1) > 1e-6:
        raise IgmError(f"dataset.weights must be non-negative and sum to 1, got {weights}")
    return GaussianModes([[loc] for loc in locs], scales, weights, device=device)


class SwissRoll(ToyDistribution):
    """The 2D swiss roll: t = 1.5π(1 + 2u), x = (t cos t, t sin t) / 5 + noise."""

    def __init__(self, noise: float = 0.05, device="cpu"):
        super().__init__(2, device)
        self.noise = noise

    def sample(self, n: int, generator: torch.Generator) -> Tensor:
        u = torch.rand(n, generator=generator, device=self.device)
        t = 1.5 * math.pi * (1 + 2 * u)
        roll = torch.stack([t * t.cos(), t * t.sin()], dim=1) / 5
        return roll + self.noise * torch.randn(n, 2, generator=generator, device=self.device)


DATASETS.register("swissroll", "2D swiss roll, scaled to about [-2.8, 2.8]^2")(SwissRoll)


class ArrayData(ToyDistribution):
    """Points from an N x D float array; each step draws rows uniformly with replacement."""

    def __init__(self, points: Tensor, device="cpu"):
        super().__init__(points.shape[1], device)
        self.points = points.to(device)

    def sample(self, n: int, generator: torch.Generator) -> Tensor:
        rows = torch.randint(len(self.points), (n,), generator=generator, device=self.device)
        return self.points[rows]


@DATASETS.register("npy", "your own N x D float array from dataset.path=FILE.npy")
def npy(path: str | None = None, device="cpu"):
    return ArrayData(load_points(path), device=device)


def load_points(path: str | None) -> Tensor:
    """Read and check an N x D array of finite floats; every problem is a one-line IgmError."""
    if not path:
        raise IgmError("dataset=npy needs dataset.path=FILE.npy (an N x D float array)")
    file = Path(path).expanduser()
    if not file.is_file():
        raise IgmError(f"dataset.path '{path}' does not exist or is not a file")
    try:
        array = np.load(file, allow_pickle=False)
    except Exception as exc:  # numpy raises several types for a file that is not an .npy array
        raise IgmError(f"dataset.path '{path}' is not a readable .npy array ({exc})") from None
    if array.ndim != 2 or array.shape[0] < 2 or array.shape[1] < 1:
        raise IgmError(f"dataset.path '{path}' must hold an N x D array, got shape {array.shape}")
    if not np.issubdtype(array.dtype, np.number) or np.iscomplexobj(array):
        raise IgmError(f"dataset.path '{path}' must hold real numbers, got dtype {array.dtype}")
    if not np.isfinite(array).all():
        raise IgmError(f"dataset.path '{path}' contains NaN or infinite values")
    return torch.as_tensor(array, dtype=torch.float32)


def build_dataset(cfg, device):
    """Build the data set named ``cfg.name`` from the rest of ``cfg`` (the ``dataset`` group):
    a ToyDistribution or an image set (igm_cli/data/images.py)."""
    params = {k: v for k, v in dict(cfg).items() if k != "name"}
    builder = DATASETS.get(cfg.name)
    try:
        return builder(**params, device=device)
    except TypeError as exc:
        raise IgmError(f"dataset '{cfg.name}': {exc}") from None


def check_dataset(cfg) -> tuple[tuple[int, ...], bool, bool]:
    """The checks of ``build_dataset`` that need no loading: image sets check their keys only
    (loading them can take long), toy sets are cheap to build. Returns (data shape, whether it
    is an image set, whether it has known modes)."""
    from igm_cli.data.images import IMAGE_SETS, check_image_config

    if cfg.name in IMAGE_SETS:
        return tuple(check_image_config(cfg)), True, False
    data = build_dataset(cfg, "cpu")
    return tuple(data.shape), False, data.has_modes
