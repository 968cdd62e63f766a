"""Distances between two sample sets: unbiased MMD² and the exact empirical 1-Wasserstein."""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial

import numpy as np
import ot
import torch
from scipy.spatial.distance import cdist

from igm_cli.kernels import mmd2_unbiased, rbf_kernel


def as_points(a) -> torch.Tensor:
    """A detached float64 tensor of points [n, d] (on the input's device); 1-D input is [n, 1]."""
    t = torch.as_tensor(a).detach().to(torch.float64)
    return t[:, None] if t.ndim == 1 else t


def mmd(x, y, bandwidths: Sequence[float] = (0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0)) -> float:
    """Unbiased MMD² (U-statistic) between samples x: [n, d] and y: [m, d] under the summed RBF
    kernel Σ_h exp(-||x - y||² / (2 h²)), in float64 without grad. Being unbiased, it can be
    slightly negative when the two distributions are (nearly) equal."""
    with torch.no_grad():
        xs = as_points(x)
        kernel = partial(rbf_kernel, bandwidths=bandwidths)
        return mmd2_unbiased(xs, as_points(y).to(xs.device), kernel).item()


def w1(x, y) -> float:
    """Exact 1-Wasserstein distance between two empirical distributions with n points each:
    min over permutations σ of (1/n) Σ_i ||x_i - y_σ(i)||. For d = 1 the sorted matching is
    optimal, W1 = mean |sort(x) - sort(y)|; for d > 1 the optimal transport problem with uniform
    weights is solved exactly by POT's network simplex (``ot.emd2``) on the Euclidean distance
    matrix (float64). With n points on each side an optimal plan is a permutation (Birkhoff),
    so this is the optimal assignment, found ~20x faster than the Hungarian method."""
    xs, ys = as_points(x).cpu().numpy(), as_points(y).cpu().numpy()
    if len(xs) != len(ys):
        raise ValueError(f"w1 needs equal sample sizes, got {len(xs)} and {len(ys)}")
    if xs.shape[1] == 1:
        return float(np.abs(np.sort(xs[:, 0]) - np.sort(ys[:, 0])).mean())
    cost = cdist(xs, ys)  # [n, n] Euclidean distances
    uniform = np.full(len(xs), 1.0 / len(xs))
    return float(ot.emd2(uniform, uniform, cost, numItermax=100 * len(xs) ** 2))
