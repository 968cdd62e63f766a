"""Drawing from a generator with fixed noise: what evaluation, plots, `igm sample` and
`igm reconstruct` share. Nothing here imports the evaluation or plotting modules.

Fixed noise is drawn on the CPU and then moved, so that a seed gives the same points on every
device: a GPU run's logged metrics can be reproduced by `igm eval device=cpu`.
"""

from __future__ import annotations

from contextlib import contextmanager

import torch
from torch import nn

EVAL_SEED = 2**31 - 1  # fixed evaluation noise and data, so metrics move only with the model


def fixed_noise(n: int, z_dim: int, seed: int, device) -> torch.Tensor:
    """[n, z_dim] standard normal noise from ``seed``, drawn on the CPU, then moved."""
    z = torch.randn(n, z_dim, generator=torch.Generator().manual_seed(seed))
    return z.to(device)


@contextmanager
def eval_mode(module: nn.Module):
    """Run ``module`` in eval mode (batch-norm statistics, no dropout), then restore its mode."""
    was_training = module.training
    module.eval()
    try:
        yield module
    finally:
        module.train(was_training)


@torch.no_grad()
def generate(generator: nn.Module, n: int, z_dim: int, seed: int, device, batch: int = 8192):
    """n samples from ``generator`` with noise drawn from ``seed`` (same seed, same points)."""
    z = fixed_noise(n, z_dim, seed, device)
    with eval_mode(generator):
        return torch.cat([generator(chunk) for chunk in z.split(batch)])


def heldout_points(dataset, n: int, device) -> torch.Tensor:
    """Inputs never trained on: the first n held-out images, or for toy sets n fresh points
    drawn with a fixed seed (the same at every evaluation and in `igm reconstruct`)."""
    if dataset.is_image:
        return dataset.heldout(n)
    return dataset.fixed_sample(n, EVAL_SEED + 1)


def image_grid(images: torch.Tensor, nrow: int = 8) -> torch.Tensor:
    """[N, C, H, W] in [-1, 1] -> one [3, H', W'] grid in [0, 1] for TensorBoard / PNG."""
    from torchvision.utils import make_grid

    images = images.detach().float().cpu().clamp(-1, 1).add(1).div(2)
    if images.shape[1] == 1:
        images = images.expand(-1, 3, -1, -1)
    return make_grid(images, nrow=nrow, padding=2, pad_value=1.0)
