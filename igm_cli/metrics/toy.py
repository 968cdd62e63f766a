"""Mode-coverage metrics for toy Gaussian mixtures (ring of 8, grid of 25; notes, section 8)."""

from __future__ import annotations

import torch

from igm_cli.metrics.distances import as_points


def mode_metrics(samples, centers, stds) -> dict:
    """Mode coverage and quality of ``samples`` [n, d] against a mixture of isotropic Gaussians
    with ``centers`` [k, d] and per-mode standard deviations ``stds`` [k] (or one scalar).

    Definitions (PacGAN's code, following VEEGAN):
    - each sample is assigned to its nearest mode centre (Euclidean distance);
    - a sample is high quality if it lies within 3 standard deviations of that mode, i.e. its
      isotropic Mahalanobis distance ||x - c|| / std <= 3;
    - ``modes``: the number of modes with at least one high-quality sample assigned;
    - ``hq``: the fraction of samples that are high quality;
    - ``kl_modes``: KL(h || uniform) = Σ_j h_j log(k h_j), where h is the histogram over the k
      modes of the assignments of all samples (0 log 0 = 0): 0 when balanced, log k when every
      sample sits on one mode.
    1-D data may be given as [n] and [k] arrays.
    """
    x, c = as_points(samples), as_points(centers)
    c = c.to(x.device)
    k = len(c)
    std = torch.as_tensor(stds, dtype=torch.float64, device=x.device).expand(k)
    dist = torch.cdist(x, c, compute_mode="donot_use_mm_for_euclid_dist")  # [n, k]
    nearest_dist, nearest = dist.min(dim=1)
    high_quality = nearest_dist <= 3.0 * std[nearest]  # Mahalanobis distance <= 3
    h = torch.bincount(nearest, minlength=k).double() / len(x)  # assignment histogram [k]
    h = h[h > 0]  # 0 log 0 = 0
    return {
        "modes": int(torch.unique(nearest[high_quality]).numel()),
        "hq": high_quality.double().mean().item(),
        "kl_modes": (h * torch.log(h * k)).sum().item(),
    }
