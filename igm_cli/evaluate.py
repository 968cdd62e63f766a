"""Evaluation of a generator against its data set: metrics and the TensorBoard picture."""

from __future__ import annotations

import torch
from torch import nn

from igm_cli.data import ToyDistribution
from igm_cli.metrics.distances import mmd, w1
from igm_cli.metrics.toy import mode_metrics

EVAL_SEED = 2**31 - 1  # fixed evaluation noise and data, so metrics move only with the model


@torch.no_grad()
def generate(generator: nn.Module, n: int, z_dim: int, seed: int, device, batch: int = 8192):
    """n samples from ``generator`` with noise drawn from ``seed`` (same seed, same points)."""
    rng = torch.Generator(device).manual_seed(seed)
    z = torch.randn(n, z_dim, generator=rng, device=device)
    was_training = generator.training
    generator.eval()
    out = torch.cat([generator(chunk) for chunk in z.split(batch)])
    generator.train(was_training)
    return out


@torch.no_grad()
def evaluate(generator: nn.Module, dataset: ToyDistribution, z_dim: int, n: int, device):
    """Returns (metrics, fake samples, real samples): mode metrics where the data set has
    known modes, and for every data set the unbiased MMD² and the exact W1 between n generated
    and n fresh data points."""
    fake = generate(generator, n, z_dim, EVAL_SEED, device).float()
    real = dataset.sample(n, torch.Generator(device).manual_seed(EVAL_SEED))
    metrics = {}
    if dataset.has_modes:
        metrics.update(mode_metrics(fake, dataset.centers, dataset.stds))
    metrics["mmd"] = mmd(fake, real)
    metrics["w1"] = w1(fake, real)
    return metrics, fake, real
