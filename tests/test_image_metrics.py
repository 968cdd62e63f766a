"""FID, KID and IS (igm_cli/metrics/images.py): closed forms, unbiasedness, the extractors."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy.linalg import sqrtm

from igm_cli.errors import IgmError
from igm_cli.metrics.images import (
    FEATURES,
    INCEPTION_FILES,
    FeaturesUnavailable,
    ImageMetrics,
    InceptionFeatures,
    feature_statistics,
    fid_from_features,
    frechet_distance,
    inception_score,
    inception_weights_path,
    kid_from_features,
    make_image_metrics,
    to_uint8,
)


def smooth_images(n: int, seed: int, channels: int = 3, size: int = 32) -> torch.Tensor:
    """Images in [-1, 1] with spatial structure: 8x8 Gaussian noise upsampled, through tanh."""
    g = torch.Generator().manual_seed(seed)
    base = torch.randn(n, channels, 8, 8, generator=g)
    return torch.tanh(F.interpolate(base, size=size, mode="bilinear", align_corners=False))


# --------------------------------------------------------------------------------------------
# FID


def test_fid_matches_the_closed_form_for_diagonal_gaussians():
    # For diagonal covariances diag(a), diag(b) the Fréchet distance is
    # ||mu1 - mu2||² + Σ_i (sqrt(a_i) - sqrt(b_i))².
    mu1, mu2 = np.array([0.0, 1.0, 0.0, 2.0]), np.array([1.0, 1.0, -0.5, 2.0])
    a, b = np.array([1.0, 4.0, 0.25, 1.0]), np.array([4.0, 1.0, 1.0, 1.0])
    exact = ((mu1 - mu2) ** 2).sum() + ((np.sqrt(a) - np.sqrt(b)) ** 2).sum()  # 1.25 + 2.25
    assert frechet_distance(mu1, np.diag(a), mu2, np.diag(b)) == pytest.approx(exact, abs=1e-10)

    rng = np.random.default_rng(0)
    n = 40_000
    x = mu1 + np.sqrt(a) * rng.standard_normal((n, 4))
    y = mu2 + np.sqrt(b) * rng.standard_normal((n, 4))
    assert fid_from_features(torch.from_numpy(x), torch.from_numpy(y)) == pytest.approx(
        exact, abs=0.12)  # ~4 standard deviations of the estimate at this n


def test_frechet_distance_with_full_covariances_matches_scipy_sqrtm():
    rng = np.random.default_rng(1)
    d = 6
    m1, m2 = rng.standard_normal((d, d)), rng.standard_normal((d, d))
    s1, s2 = m1 @ m1.T + 0.1 * np.eye(d), m2 @ m2.T  # s1 s2 is not symmetric
    mu1, mu2 = rng.standard_normal(d), rng.standard_normal(d)
    reference = (((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2)
                 - 2 * np.trace(sqrtm(s1 @ s2).real))
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(reference, rel=1e-8)
    # a rank-deficient covariance (fewer samples than dimensions) stays finite and >= 0
    few = rng.standard_normal((5, d))
    assert 0 <= fid_from_features(few, few + 1.0) == pytest.approx(d, rel=1e-6)


def test_feature_statistics_are_the_sample_mean_and_unbiased_covariance():
    f = torch.randn(50, 3, generator=torch.Generator().manual_seed(2))
    mu, sigma = feature_statistics(f)
    assert np.allclose(mu, f.double().mean(0).numpy())
    assert np.allclose(sigma, np.cov(f.double().numpy(), rowvar=False))


def test_fid_of_a_set_with_itself_is_zero_with_random_conv():
    metrics = ImageMetrics(["fid"], "random_conv")
    x = torch.rand(200, 3, 32, 32, generator=torch.Generator().manual_seed(3)) * 2 - 1
    f = metrics.extract(x)[0]
    scale = np.trace(feature_statistics(f)[1])
    assert scale > 0
    assert abs(fid_from_features(f, f)) < 1e-6 * scale
    metrics.real_features(x)
    assert abs(metrics.compute(x)["fid"]) < 1e-6 * scale
    # while another sample is measurably away
    assert fid_from_features(f, metrics.extract(x.flip(0)[:100] * 0.5)[0]) > 1e-3 * scale


def test_fid_and_kid_grow_with_added_noise():
    metrics = ImageMetrics(["fid", "kid"], "random_conv", kid_subsets=10, kid_subset_size=100)
    metrics.real_features(smooth_images(200, seed=4))
    fake = smooth_images(200, seed=5)
    g = torch.Generator().manual_seed(6)
    results = [metrics.compute((fake + s * torch.randn(fake.shape, generator=g)).clamp(-1, 1))
               for s in (0.0, 0.1, 0.2, 0.4, 0.8)]
    fids = [r["fid"] for r in results]
    kids = [r["kid"] for r in results]
    assert all(a < b for a, b in zip(fids, fids[1:])), fids
    assert all(a < b for a, b in zip(kids, kids[1:])), kids
    # the same distribution without noise: KID is ~0 (unbiased), within a few stds
    assert abs(results[0]["kid"]) < 3 * results[0]["kid_std"] + 1e-9
    assert results[-1]["kid"] > 10 * results[-1]["kid_std"]


# --------------------------------------------------------------------------------------------
# KID


def cubic(a, b):
    return (float(np.dot(a, b)) / len(a) + 1.0) ** 3


def test_kid_matches_a_direct_computation():
    rng = np.random.default_rng(7)
    x, y = rng.standard_normal((10, 3)), rng.standard_normal((10, 3)) + 0.3
    m = len(x)
    xx = sum(cubic(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    yy = sum(cubic(y[i], y[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    xy = sum(cubic(x[i], y[j]) for i in range(m) for j in range(m)) / (m * m)
    direct = xx + yy - 2 * xy
    # subsets of the full size are permutations, and MMD² does not depend on the order
    mean, std = kid_from_features(x, y, subsets=3, subset_size=1000)
    assert mean == pytest.approx(direct, rel=1e-10)
    assert std == pytest.approx(0.0, abs=1e-12)


def test_kid_with_and_without_precomputed_grams_agree():
    g = torch.Generator().manual_seed(8)
    x, y = torch.randn(60, 16, generator=g), torch.randn(50, 16, generator=g) * 1.2
    fast = kid_from_features(x, y, subsets=7, subset_size=20, seed=3)
    slow = kid_from_features(x, y, subsets=7, subset_size=20, seed=3, gram_limit=0)
    assert fast == pytest.approx(slow, rel=1e-10)
    assert fast[1] > 0  # the subsets differ
    assert kid_from_features(x, y, subsets=7, subset_size=20, seed=3) == fast  # seeded


def test_kid_is_unbiased_where_the_v_statistic_is_not():
    # Many pairs of independent samples of N(0, I): the KID estimates average to ~0 within a
    # few standard errors, while the V-statistic (diagonal kept) is clearly positive.
    g = torch.Generator().manual_seed(9)
    reps, m, d = 300, 30, 5
    kids, vstats = [], []
    for _ in range(reps):
        x, y = torch.randn(m, d, generator=g), torch.randn(m, d, generator=g)
        kids.append(kid_from_features(x, y, subsets=1, subset_size=m)[0])
        xd, yd = x.double(), y.double()
        k = lambda a, b: (a @ b.T / d + 1) ** 3  # noqa: E731
        vstats.append((k(xd, xd).mean() + k(yd, yd).mean() - 2 * k(xd, yd).mean()).item())
    kids, vstats = np.array(kids), np.array(vstats)
    se = kids.std() / math.sqrt(reps)
    assert abs(kids.mean()) < 4 * se
    assert vstats.mean() > 20 * se
    assert (kids < 0).any()  # unbiased estimates of 0 must sometimes be negative


def test_kid_is_positive_for_different_distributions():
    g = torch.Generator().manual_seed(10)
    x, y = torch.randn(300, 8, generator=g), torch.randn(300, 8, generator=g) + 0.5
    mean, std = kid_from_features(x, y, subsets=20, subset_size=100)
    assert mean > 0 and mean > 5 * std


# --------------------------------------------------------------------------------------------
# Inception Score


def test_inception_score_closed_forms():
    mean, std = inception_score(torch.randn(1, 7).repeat(100, 1), splits=10)
    assert mean == pytest.approx(1.0, abs=1e-12) and std == pytest.approx(0.0, abs=1e-12)

    k = 5  # confident predictions, each class equally often in each split: IS = k
    logits = 50.0 * F.one_hot(torch.arange(100) % k, k).double()
    mean, std = inception_score(logits, splits=10)
    assert mean == pytest.approx(k, rel=1e-9) and std == pytest.approx(0.0, abs=1e-9)

    # half the rows p = (0.9, 0.1), half (0.1, 0.9): p(y) = (1/2, 1/2) and
    # KL = 0.9 log 1.8 + 0.1 log 0.2 for every row
    p = torch.tensor([[0.9, 0.1], [0.1, 0.9]], dtype=torch.float64).repeat(10, 1)  # 0.9 exactly
    expected = math.exp(0.9 * math.log(1.8) + 0.1 * math.log(0.2))
    assert inception_score(p.log(), splits=1)[0] == pytest.approx(expected, rel=1e-9)

    spread = inception_score(torch.randn(200, k, generator=torch.Generator().manual_seed(11)), 4)
    assert 1.0 < spread[0] < k and spread[1] > 0


# --------------------------------------------------------------------------------------------
# Extractors and ImageMetrics


def test_registered_extractors():
    assert {"inception", "random_conv", "pixels"} <= set(FEATURES.names())


@pytest.mark.parametrize("shape", [(5, 1, 32, 32), (5, 3, 32, 32), (5, 1, 64, 64),
                                   (5, 3, 64, 64)])
def test_random_conv_and_pixels_take_grayscale_and_64px(shape):
    x = torch.rand(shape, generator=torch.Generator().manual_seed(12)) * 2 - 1
    f, logits = FEATURES.get("random_conv")(None, "cpu")(x)
    assert f.shape == (5, 128) and logits.shape == (5, 10)
    assert torch.isfinite(f).all() and f.std(0).sum() > 0  # not a dead net
    p, none = FEATURES.get("pixels")(None, "cpu")(x)
    assert p.shape == (5, shape[1] * 64) and none is None


def test_random_conv_is_the_same_net_on_every_build():
    x = torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(13)) * 2 - 1
    torch.manual_seed(123)
    a = FEATURES.get("random_conv")(None, "cpu")(x)[0]
    torch.manual_seed(456)  # the global seed does not matter
    b = FEATURES.get("random_conv")(None, "cpu")(x)[0]
    assert torch.equal(a, b)


def test_image_metrics_on_grayscale_64px_images():
    metrics = ImageMetrics(["fid", "kid", "is"], "random_conv", kid_subsets=5,
                           kid_subset_size=50, is_splits=5, batch_size=32)
    real = smooth_images(100, seed=14, channels=1, size=64)
    fake = smooth_images(100, seed=15, channels=1, size=64)
    metrics.real_features(real.split(30))  # an iterable of batches
    out = metrics.compute(fake)
    assert set(out) == {"fid", "kid", "kid_std", "is", "is_std"}
    assert all(math.isfinite(v) for v in out.values())
    assert out["fid"] > 0 and 1.0 <= out["is"] <= 10.0


def test_prdc_of_images_uses_the_first_prdc_samples_of_each_side(monkeypatch):
    """Precision/recall/density/coverage cost N²: on images they use the first PRDC_SAMPLES
    (10 000) of each side, while FID uses all (Stacked Digits evaluates 26 000 samples)."""
    from igm_cli.metrics import images

    assert images.PRDC_SAMPLES == 10_000
    monkeypatch.setattr(images, "PRDC_SAMPLES", 120)
    metrics = ImageMetrics(["fid", "prdc"], "pixels", batch_size=64)
    real = smooth_images(120, seed=18, channels=1, size=8)
    metrics.real_features(torch.cat([real, smooth_images(60, seed=19, channels=1, size=8)]))
    far = torch.ones(40, 1, 8, 8)  # far from every real image: would lower precision to 0.75
    out = metrics.compute(torch.cat([real, far]))
    assert out["precision"] == out["recall"] == out["coverage"] == 1.0  # the same 120 images
    assert out["fid"] > 1.0  # FID sees all 160 generated images, the far ones included


def test_real_features_are_computed_once_and_batches_do_not_change_them():
    metrics = ImageMetrics(["fid"], "random_conv", batch_size=16)
    real = smooth_images(40, seed=16)
    first = metrics.real_features(real)
    assert torch.allclose(first, metrics.extract(real.split(7))[0], atol=1e-5)
    assert metrics.real_features(smooth_images(40, seed=17)) is first  # cached
    assert metrics.real_features() is first
    assert not torch.equal(metrics.real_features(smooth_images(40, seed=17), refresh=True), first)


def test_unknown_names_list_the_choices():
    with pytest.raises(IgmError, match="inception, pixels, random_conv"):
        ImageMetrics(["fid"], "nope")
    with pytest.raises(IgmError, match="unknown image metric 'precision'.*fid, kid, is"):
        ImageMetrics(["fid", "precision"], "random_conv")


def test_inception_score_needs_an_extractor_with_logits():
    with pytest.raises(IgmError, match="'is' needs class logits.*'pixels'"):
        ImageMetrics(["fid", "is"], "pixels")
    assert ImageMetrics(["fid", "kid"], "pixels").compute  # fine without IS


def test_inception_without_weights_says_so_in_one_line(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    try:  # should anything try to download, fail loudly instead of hanging
        import torch_fidelity.feature_extractor_inceptionv3 as tf_inception

        def no_download(*args, **kwargs):
            raise AssertionError("tried to download the Inception weights")

        monkeypatch.setattr(tf_inception, "load_state_dict_from_url", no_download)
    except ImportError:
        pass
    with pytest.raises(FeaturesUnavailable) as info:
        ImageMetrics(["fid", "kid", "is"], "inception")
    message = str(info.value)
    assert "\n" not in message and "eval.weights" in message
    assert INCEPTION_FILES[0] in message and str(tmp_path / "torch") in message
    assert isinstance(info.value, IgmError)

    with pytest.raises(FeaturesUnavailable, match="eval.weights"):
        ImageMetrics(["fid"], "inception", weights=str(tmp_path / "missing.pth"))
    bad = tmp_path / "bad.pth"
    torch.save({"not": torch.zeros(1)}, bad)
    if FEATURES.get("inception") and _has_torch_fidelity():
        with pytest.raises(FeaturesUnavailable, match="eval.weights") as info:
            ImageMetrics(["fid"], "inception", weights=str(bad))
        assert "\n" not in str(info.value)

    warnings = []
    assert make_image_metrics(["fid"], "inception", None, "cpu", warn=warnings.append) is None
    assert len(warnings) == 1 and "eval.weights" in warnings[0]
    with pytest.raises(IgmError):  # configuration mistakes are not swallowed
        make_image_metrics(["fid"], "nope", None, "cpu", warn=warnings.append)


def _has_torch_fidelity() -> bool:
    try:
        import torch_fidelity  # noqa: F401
    except ImportError:
        return False
    return True


def test_inception_weights_are_found_in_the_torch_hub_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    cache = tmp_path / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    for name in reversed(INCEPTION_FILES):  # each accepted name, the first one preferred
        (cache / name).write_bytes(b"")
        assert inception_weights_path(None) == str(cache / name)
    assert inception_weights_path(str(cache / INCEPTION_FILES[1])) == str(
        cache / INCEPTION_FILES[1])


def test_inception_runs_with_a_weights_file(tmp_path):
    # The real weights cannot be downloaded here: an InceptionV3 state dict of the same keys
    # and shapes (torchvision's layout, 1008 classes, random values) stands in for them.
    pytest.importorskip("torch_fidelity")
    torchvision = pytest.importorskip("torchvision")
    torch.manual_seed(0)
    net = torchvision.models.inception_v3(weights=None, num_classes=1008, aux_logits=False,
                                          init_weights=False)
    path = tmp_path / "inception.pth"
    torch.save(net.state_dict(), path)
    extractor = FEATURES.get("inception")(str(path), "cpu")
    # one image: a 299 px Inception pass takes ~1 s of CPU (several on a loaded machine)
    f, logits = extractor(torch.rand(1, 1, 32, 32) * 2 - 1)  # grayscale, resized to 299 inside
    assert f.shape == (1, 2048) and logits.shape == (1, 1008)
    assert f.dtype == torch.float32 and torch.isfinite(f).all()


def test_images_reach_inception_as_3_channel_uint8():
    assert to_uint8(torch.tensor([-1.5, -1.0, 0.0, 1.0, 2.0])).tolist() == [0, 0, 128, 255, 255]
    seen = []

    def net(x):
        seen.append(x)
        return x.float().mean(dim=(2, 3)), x.float().amax(dim=(2, 3))

    extractor = InceptionFeatures(net)
    f, logits = extractor(torch.zeros(2, 1, 64, 64))
    assert seen[0].dtype == torch.uint8 and seen[0].shape == (2, 3, 64, 64)
    assert (seen[0] == 128).all() and f.dtype == torch.float32
    with pytest.raises(IgmError, match="1 or 3"):
        extractor(torch.zeros(2, 2, 32, 32))
