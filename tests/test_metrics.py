"""Toy mode-coverage metrics and sample-set distances on cases with known answers."""

import math

import numpy as np
import pytest
import torch

from igm_cli.kernels import make_kernel, mmd2_gaussians_rbf, mmd2_unbiased
from igm_cli.metrics.distances import mmd, w1
from igm_cli.metrics.toy import mode_metrics

# ring of 8 Gaussians, radius 2, std 0.02 (notes, section 8)
ANGLES = 2 * math.pi * torch.arange(8, dtype=torch.float64) / 8
RING = 2.0 * torch.stack([ANGLES.cos(), ANGLES.sin()], dim=1)  # [8, 2]
RING_STD = 0.02


def test_samples_on_every_centre_cover_all_modes():
    samples = RING.repeat(10, 1)  # 10 samples exactly on each centre
    m = mode_metrics(samples, RING, torch.full((8,), RING_STD))
    assert m == {"modes": 8, "hq": 1.0, "kl_modes": pytest.approx(0.0, abs=1e-12)}
    assert isinstance(m["modes"], int) and isinstance(m["hq"], float)


def test_collapse_on_one_centre():
    samples = RING[3].repeat(50, 1)
    m = mode_metrics(samples.numpy(), RING.numpy(), RING_STD)  # numpy input, scalar std
    assert m == {"modes": 1, "hq": 1.0, "kl_modes": pytest.approx(math.log(8))}


def test_samples_four_std_away_are_low_quality():
    radial = RING / RING.norm(dim=1, keepdim=True)
    samples = torch.cat([RING + 4 * RING_STD * radial, RING - 4 * RING_STD * radial])
    m = mode_metrics(samples, RING, torch.full((8,), RING_STD))
    assert m["modes"] == 0 and m["hq"] == 0.0
    assert m["kl_modes"] == pytest.approx(math.log(8))  # no high-quality sample: log k


def test_mixed_case_by_hand_in_1d():
    centers = torch.tensor([[0.0], [10.0], [20.0]])
    stds = torch.tensor([1.0, 1.0, 2.0])  # high-quality radii 3, 3, 6
    samples = torch.tensor([0.5, 2.9, 3.5, 14.5, 16.0, 25.0, 27.0])[:, None]
    # nearest modes: 0 0 0 1 2 2 2; distances 0.5 2.9 3.5 4.5 4 5 7 -> high quality: y y n n y y n
    # mode 1 has a sample, but no high-quality one, so it is not covered
    m = mode_metrics(samples, centers, stds)
    assert m["modes"] == 2
    assert m["hq"] == pytest.approx(4 / 7)
    # histogram of the 4 high-quality samples: (2, 0, 2) / 4 -> 2 · 1/2 log(3/2) = log 1.5
    assert m["kl_modes"] == pytest.approx(math.log(1.5))
    assert mode_metrics(samples[:, 0], centers[:, 0], stds) == m  # 1-D arrays as d = 1


def test_mode_distance_is_isotropic_mahalanobis_per_mode():
    centers = torch.tensor([[0.0, 0.0], [10.0, 0.0]])
    samples = torch.tensor([[0.0, 2.0], [10.0, 2.0]])  # distance 2 from each own centre
    m = mode_metrics(samples, centers, torch.tensor([0.5, 1.0]))  # 4 std and 2 std
    assert m["modes"] == 1 and m["hq"] == 0.5


def test_w1_1d_shift():
    x = torch.randn(500, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    assert w1(x, x + 0.7) == pytest.approx(0.7)
    assert w1(np.array([0.0, 1.0, 2.0]), np.array([3.0, 0.0, 0.0])) == pytest.approx(2.0 / 3.0)


def test_w1_nd_permutation_and_translation():
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(200, 3, generator=gen, dtype=torch.float64)
    perm = torch.randperm(200, generator=gen)
    assert w1(x, x[perm]) == pytest.approx(0.0, abs=1e-12)
    v = torch.tensor([0.3, -1.2, 0.4], dtype=torch.float64)
    assert w1(x, x[perm] + v) == pytest.approx(v.norm().item())  # W1(P, P + v) = ||v||


def test_w1_assignment_agrees_with_sorting_in_1d():
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(300, generator=gen, dtype=torch.float64)
    y = torch.rand(300, generator=gen, dtype=torch.float64) * 3 - 1
    pad = torch.zeros(300, dtype=torch.float64)
    sorted_value = w1(x, y)  # d = 1: sorted matching
    assert sorted_value > 0.1
    # the same points embedded in 2-D go through the optimal-assignment path
    assert w1(torch.stack([x, pad], 1), torch.stack([y, pad], 1)) == pytest.approx(sorted_value)


def test_w1_rejects_unequal_sizes():
    with pytest.raises(ValueError, match="100 and 99"):
        w1(np.zeros((100, 2)), np.zeros((99, 2)))


def test_mmd_is_the_unbiased_rbf_estimate_in_float64():
    gen = torch.Generator().manual_seed(3)
    x, y = torch.randn(100, 2, generator=gen), torch.randn(80, 2, generator=gen) + 0.5
    kernel = make_kernel("rbf", bandwidths=(0.5, 2.0))
    expected = mmd2_unbiased(x.double(), y.double(), kernel).item()
    assert mmd(x, y, (0.5, 2.0)) == pytest.approx(expected, rel=1e-12)  # float32 in, float64 maths


def test_mmd_matches_closed_form_and_is_near_zero_for_equal_distributions():
    gen = torch.Generator().manual_seed(4)
    x = torch.randn(1000, 2, generator=gen)
    y = 0.5 * torch.randn(1000, 2, generator=gen) + torch.tensor([2.0, 0.0])
    z = torch.randn(1000, 2, generator=gen)
    bandwidths = (0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0)  # the default
    expected = mmd2_gaussians_rbf([0, 0], np.eye(2), [2, 0], 0.25 * np.eye(2), bandwidths)
    value = mmd(x, y)
    assert isinstance(value, float)
    assert value == pytest.approx(expected, rel=0.12)  # about 4 Monte-Carlo sd
    assert abs(mmd(x, z)) < 0.01 * expected  # about 7 Monte-Carlo sd


def test_evaluation_metrics_reuse_the_data_terms_with_the_same_numbers():
    """The data side of MMD and of precision/recall/density/coverage is computed once per
    fixed evaluation sample; every evaluation against it gives what a fresh computation gives."""
    from igm_cli.metrics.manifold import ManifoldMetrics
    from igm_cli.metrics.points import data_terms, mmd_metric, prdc_metric

    gen = torch.Generator().manual_seed(5)
    real = torch.randn(300, 2, generator=gen)
    fakes = [torch.randn(300, 2, generator=gen) * s + 0.1 * s for s in (0.5, 1.0, 2.0)]
    data_terms.cache_clear()
    for fake in fakes:
        assert mmd_metric(real, fake, None)["mmd"] == pytest.approx(mmd(fake, real), rel=1e-12)
        assert prdc_metric(real, fake, None) == ManifoldMetrics(real).compute(fake)
    assert data_terms.cache_info().misses == 1 and data_terms.cache_info().hits == 2 * 3 - 1


def _ring_with_few_high_quality(hq_modes):
    """2500 ring samples: one per mode in ``hq_modes`` on its centre (high quality), the rest
    4 std outside the modes, spread evenly over all 8 (low quality)."""
    radial = RING / RING.norm(dim=1, keepdim=True)
    low = (RING + 4 * RING_STD * radial).repeat(313, 1)[: 2500 - len(hq_modes)]
    return torch.cat([RING[list(hq_modes)], low])


def test_kl_modes_is_over_high_quality_samples_only():
    """PacGAN's histogram counts high-quality samples only: 3 of 2500 are high quality, two on
    mode 0 and one on mode 1, so h = (2/3, 1/3, 0, ...) and KL(h || uniform over 8) =
    2/3 log(16/3) + 1/3 log(8/3) ≈ 1.4429, although all 2500 are spread evenly (KL ≈ 5e-6)."""
    m = mode_metrics(_ring_with_few_high_quality([0, 0, 1]), RING, RING_STD)
    expected = 2 / 3 * math.log(16 / 3) + 1 / 3 * math.log(8 / 3)
    assert m["modes"] == 2 and m["hq"] == pytest.approx(3 / 2500)
    assert m["kl_modes"] == pytest.approx(expected, rel=1e-12)
    assert expected == pytest.approx(1.4429, abs=1e-4)


def test_kl_modes_of_balanced_high_quality_samples_is_zero():
    m = mode_metrics(_ring_with_few_high_quality(range(8)), RING, RING_STD)
    assert m["modes"] == 8 and m["kl_modes"] == pytest.approx(0.0, abs=1e-12)


def test_kl_modes_without_high_quality_samples_is_log_k():
    """No high-quality sample: the histogram is empty; kl_modes is log k, the value of all mass
    on one mode, so a generator with no usable sample never scores better than a collapsed one."""
    m = mode_metrics(_ring_with_few_high_quality([]), RING, RING_STD)
    assert m["modes"] == 0 and m["hq"] == 0.0
    assert m["kl_modes"] == pytest.approx(math.log(8), rel=1e-12)
