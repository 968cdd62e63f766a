import math

import numpy as np
import pytest
import torch

from igm_cli.data.toy import SwissRoll, gaussian_mixture_1d, grid25, load_points, npy, ring8
from igm_cli.errors import IgmError

N = 20000


def draw(dataset, n=N, seed=0):
    return dataset.sample(n, torch.Generator().manual_seed(seed))


def nearest(points, centers):
    return torch.cdist(points, centers).min(1)


def test_ring8_layout_and_moments():
    data = ring8()
    angles = torch.atan2(data.centers[:, 1], data.centers[:, 0]) % (2 * math.pi)
    assert torch.allclose(angles.sort().values, torch.arange(8) * math.pi / 4, atol=1e-6)
    assert torch.allclose(data.centers.norm(dim=1), torch.full((8,), 2.0))
    x = draw(data)
    dist, mode = nearest(x, data.centers)
    assert torch.bincount(mode, minlength=8).min() > N / 8 * 0.9  # all modes, equal weight
    assert x.mean(0).abs().max() < 0.05
    # squared distance to the centre of a 2D N(0, s²I) averages 2 s²
    assert dist.pow(2).mean().sqrt().item() == pytest.approx(0.02 * math.sqrt(2), rel=0.03)


def test_grid25_layout():
    data = grid25()
    expected = {(a, b) for a in (-4, -2, 0, 2, 4) for b in (-4, -2, 0, 2, 4)}
    assert {tuple(c) for c in data.centers.round().int().tolist()} == expected
    dist, mode = nearest(draw(data), data.centers)
    assert len(mode.unique()) == 25
    assert dist.pow(2).mean().sqrt().item() == pytest.approx(0.05 * math.sqrt(2), rel=0.03)


def test_gaussian_mixture_1d_moments():
    data = gaussian_mixture_1d(weights=[0.25, 0.75], locs=[-1.0, 3.0], scales=[0.5, 1.0])
    x = draw(data, 100000)[:, 0].double()
    mean = 0.25 * -1 + 0.75 * 3
    second = 0.25 * (0.25 + 1) + 0.75 * (1 + 9)
    assert x.mean().item() == pytest.approx(mean, abs=0.02)
    assert x.var().item() == pytest.approx(second - mean**2, rel=0.02)


@pytest.mark.parametrize("kwargs, match", [
    (dict(weights=[0.5, 0.6], locs=[0, 1], scales=[1, 1]), "sum to 1"),
    (dict(weights=[0.5, 0.5], locs=[0, 1], scales=[1, -1]), "positive"),
    (dict(weights=[1.0], locs=[0, 1], scales=[1, 1]), "same length"),
])
def test_gaussian_mixture_1d_rejects_bad_parameters(kwargs, match):
    with pytest.raises(IgmError, match=match):
        gaussian_mixture_1d(**kwargs)


def test_swissroll_shape_and_range():
    x = draw(SwissRoll(noise=0.0))
    radius = x.norm(dim=1) * 5  # t on the roll, between 1.5π and 4.5π
    assert radius.min() >= 1.5 * math.pi - 1e-3 and radius.max() <= 4.5 * math.pi + 1e-3


def test_sampling_is_reproducible_from_generator_state():
    data = ring8()
    g = torch.Generator().manual_seed(3)
    state = g.get_state()
    first = data.sample(64, g)
    g.set_state(state)
    assert torch.equal(first, data.sample(64, g))


def test_npy_samples_rows_of_the_file(tmp_path):
    points = np.random.default_rng(0).normal(size=(50, 3)).astype(np.float64)
    np.save(tmp_path / "p.npy", points)
    data = npy(str(tmp_path / "p.npy"))
    assert data.dim == 3 and not data.has_modes
    x = draw(data, 500).numpy()
    rows = {tuple(np.float32(r)) for r in points}
    assert all(tuple(r) in rows for r in x)


@pytest.mark.parametrize("content, match", [
    (np.zeros(5), "N x D array"),
    (np.array([[0.0, np.nan], [1.0, 2.0]]), "NaN"),
    (np.array([["a", "b"], ["c", "d"]]), "real numbers"),
])
def test_npy_rejects_bad_arrays(tmp_path, content, match):
    np.save(tmp_path / "bad.npy", content)
    with pytest.raises(IgmError, match=match):
        load_points(str(tmp_path / "bad.npy"))


def test_npy_rejects_missing_and_garbage_files(tmp_path):
    with pytest.raises(IgmError, match="does not exist"):
        load_points(str(tmp_path / "missing.npy"))
    (tmp_path / "garbage.npy").write_text("not numpy")
    with pytest.raises(IgmError, match="not a readable .npy"):
        load_points(str(tmp_path / "garbage.npy"))
