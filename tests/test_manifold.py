"""Precision/recall (Kynkäänniemi et al. 2019) and density/coverage (Naeem et al. 2020) on
cases with known answers: by hand, identical and disjoint sets, the two lemmas of Naeem et al.
for equal distributions, a generator that drops half the modes, and invariances."""

import math

import pytest
import torch

from igm_cli.errors import IgmError
from igm_cli.metrics.manifold import ManifoldMetrics, knn_radii, manifold_metrics


def gen(seed):
    return torch.Generator().manual_seed(seed)


def test_by_hand_in_1d_with_an_outlier():
    """Real X = (0, 1, 3, 7, 30), generated Y = (0.5, 4.5, 12, 20); k = 1 for precision/recall,
    k = 2 for density/coverage.
    NND_1(X) = (1, 1, 2, 4, 23), NND_1(Y) = (4, 4, 7.5, 8), NND_2(X) = (3, 2, 3, 6, 27).
    precision: 0.5 ∈ B(0, 1), 4.5 ∈ B(3, 2), and the outlier's ball B(30, 23) holds 12 and 20
    -> 1 (the outlier inflates precision, Naeem et al.'s point). recall: 0, 1 within 4 of 0.5,
    3 and 7 within 4 of 4.5, 30 is 10 > 8 from 20 -> 4/5.
    density: B(0,3) ∋ 0.5; B(1,2) ∋ 0.5; B(3,3) ∋ 0.5, 4.5; B(7,6) ∋ 4.5, 12; B(30,27) ∋ 4.5, 12,
    20 -> 9 / (2 · 4) = 1.125. coverage: every ball holds a Y -> 1."""
    x = torch.tensor([0.0, 1.0, 3.0, 7.0, 30.0])
    y = torch.tensor([0.5, 4.5, 12.0, 20.0])
    assert knn_radii(x, 1).tolist() == pytest.approx([1, 1, 2, 4, 23])
    assert knn_radii(x, (1, 2)).flatten().tolist() == pytest.approx(
        [1, 3, 1, 2, 2, 3, 4, 6, 23, 27])
    m = manifold_metrics(x, y, k_pr=1, k_dc=2)
    assert m == pytest.approx({"precision": 1.0, "recall": 0.8, "density": 1.125,
                               "coverage": 1.0})
    without_outlier = manifold_metrics(x[:4], y, k_pr=1, k_dc=2)
    assert without_outlier["precision"] == 0.5  # 12 and 20 are outside every real ball


def test_radii_match_brute_force_and_blocks_do_not_matter():
    x = torch.randn(300, 5, generator=gen(0), dtype=torch.float64)
    d = torch.cdist(x, x)
    d.fill_diagonal_(math.inf)
    expected = d.sort(dim=1).values[:, [2, 4]]  # 3rd and 5th nearest other point
    assert torch.allclose(knn_radii(x, (3, 5)), expected, rtol=1e-9)
    assert torch.allclose(knn_radii(x, (3, 5), block=7), expected, rtol=1e-9)
    y = torch.randn(250, 5, generator=gen(1), dtype=torch.float64) + 0.5
    assert manifold_metrics(x, y, block=11) == manifold_metrics(x, y)


def test_duplicates_count_as_neighbours_at_distance_zero():
    x = torch.tensor([[0.0], [0.0], [0.0], [0.0], [5.0]])
    assert knn_radii(x, 3).tolist() == [0.0, 0.0, 0.0, 0.0, 5.0]
    # closed balls: a generated point on a duplicated real point is inside (radius 0)
    assert manifold_metrics(x, torch.zeros(4, 1), k_pr=3, k_dc=3)["precision"] == 1.0


@pytest.mark.parametrize("dim", [2, 64])
def test_identical_sets(dim):
    """Y = X: every Y_j is the centre of its own ball (precision = recall = coverage = 1), and
    each ball B(X_i, NND_k) holds X_i and its k neighbours, so density = (k + 1) / k."""
    x = torch.randn(1000, dim, generator=gen(dim))  # float32
    m = manifold_metrics(x, x.clone())
    assert m["precision"] == m["recall"] == m["coverage"] == 1.0
    assert m["density"] == pytest.approx(6 / 5, abs=1e-12)


def test_disjoint_far_apart_sets_score_zero():
    x = torch.randn(500, 8, generator=gen(2))
    y = torch.randn(400, 8, generator=gen(3)) + 100.0
    assert manifold_metrics(x, y) == {"precision": 0.0, "recall": 0.0, "density": 0.0,
                                      "coverage": 0.0}


def test_equal_distributions_follow_naeem_lemmas():
    """X, Y independent, 2000 points each of N(0, I_16). Lemma 1: E[density] = 1. Lemma 2:
    E[coverage] = 1 - Π_{i=1..5} (N - i) / (N + M - i) = 0.96887. Over 20 seeds we measured
    sd 0.028 for density and 0.005 for coverage: tolerances 0.1 and 0.02 are about 4 sd."""
    n = 2000
    x = torch.randn(n, 16, generator=gen(4), dtype=torch.float64)
    y = torch.randn(n, 16, generator=gen(5), dtype=torch.float64)
    m = manifold_metrics(x, y)
    expected_coverage = 1 - math.prod((n - i) / (2 * n - i) for i in range(1, 6))
    assert m["density"] == pytest.approx(1.0, abs=0.1)
    assert m["coverage"] == pytest.approx(expected_coverage, abs=0.02)


def ring_mixture(counts, generator, std=0.1):
    """Points of a mixture of 10 Gaussians on a circle of radius 10 (centres 6.2 apart, 62
    std), ``counts[i]`` from mode i, in mode order."""
    angles = 2 * math.pi * torch.arange(10) / 10
    centres = 10 * torch.stack([angles.cos(), angles.sin()], dim=1)
    mode = torch.cat([torch.full((c,), i) for i, c in enumerate(counts)])
    return centres[mode] + std * torch.randn(len(mode), 2, generator=generator)


def test_generator_covering_half_the_modes():
    """Real: 200 points on each of 10 modes. Generated: 400 on each of modes 0-4, none on 5-9.
    The real points of modes 5-9 (exactly half) are 60 std from any generated point, far
    outside every generated ball, so recall <= 0.5 and coverage <= 0.5 exactly; the covered
    half is recalled as often as with a generator that covers every mode (the control,
    same sizes): recall ≈ recall_control / 2. Generated points all lie on real modes, so
    precision ≈ the control's (a k-NN manifold misses a few tail points, ~3 % here).
    Tolerances 0.015 and 0.025: a few times the binomial sd (0.004) plus the control's
    own noise, measured over 5 seeds (precision 0.957-0.982, recall 0.483-0.490)."""
    g = gen(6)
    real = ring_mixture([200] * 10, g)
    half = manifold_metrics(real, ring_mixture([400] * 5 + [0] * 5, g))
    control = manifold_metrics(real, ring_mixture([200] * 10, g))
    assert 0.5 * control["recall"] - 0.015 <= half["recall"] <= 0.5
    assert 0.5 * control["coverage"] - 0.015 <= half["coverage"] <= 0.5
    assert half["precision"] >= 0.95
    assert half["precision"] == pytest.approx(control["precision"], abs=0.025)
    assert control["recall"] >= 0.95 and control["coverage"] >= 0.95


def test_invariant_to_translation_rotation_and_scale():
    x = torch.randn(800, 6, generator=gen(7), dtype=torch.float64)
    y = torch.randn(700, 6, generator=gen(8), dtype=torch.float64) + 1.0
    q, _ = torch.linalg.qr(torch.randn(6, 6, generator=gen(9), dtype=torch.float64))
    shift = 50.0 * torch.randn(6, generator=gen(10), dtype=torch.float64)
    base = manifold_metrics(x, y)
    assert all(0.3 < value < 0.8 for value in base.values())  # no trivial 0 or 1
    for a in (1e-3, 7.0, 1e4):
        assert manifold_metrics(a * x @ q + shift, a * y @ q + shift) == base


def test_float32_agrees_with_float64():
    x = torch.randn(600, 32, generator=gen(11), dtype=torch.float64)
    y = 0.8 * torch.randn(600, 32, generator=gen(12), dtype=torch.float64) + 0.2
    m64, m32 = manifold_metrics(x, y), manifold_metrics(x.float(), y.float())
    for name in m64:  # a point exactly on a ball's edge may flip: at most 1/600 apart
        assert m32[name] == pytest.approx(m64[name], abs=2.5 / 600)


def test_real_radii_are_reused():
    x = torch.randn(300, 4, generator=gen(13))
    metrics = ManifoldMetrics(x)
    y1, y2 = torch.randn(200, 4, generator=gen(14)), torch.randn(250, 4, generator=gen(15))
    assert metrics.compute(y1) == manifold_metrics(x, y1)
    assert metrics.compute(y2) == manifold_metrics(x, y2)


def test_bad_input_is_one_line_error():
    with pytest.raises(IgmError, match="more than k = 5 points per set, got 5"):
        manifold_metrics(torch.randn(5, 2), torch.randn(10, 2))
    with pytest.raises(IgmError, match="generated features have 3 dimensions, real ones 2"):
        manifold_metrics(torch.randn(10, 2), torch.randn(10, 3))
    with pytest.raises(IgmError, match=r"features \[n, d\], got \[2, 3, 4\]"):
        manifold_metrics(torch.randn(2, 3, 4), torch.randn(10, 3))
