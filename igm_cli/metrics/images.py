"""Image-quality metrics: FID, KID and the Inception Score on the features of a pluggable
extractor (``eval.features``).

Library: torch-fidelity, for the Inception network only. Its ``FeatureExtractorInceptionV3`` is
the maintained port of the TensorFlow graph behind the published numbers (FID of Heusel et al.
2017, IS of Salimans et al. 2016, KID of Binkowski et al. 2018): same weights, TF1-style
bilinear resize to 299 px, and one forward pass gives both the 2048-d pool features and the
1008 class logits; it takes the weight file as ``feature_extractor_weights_path``. torchmetrics
was the other candidate, but its Inception module is a thin subclass of this very class (it
needs torch-fidelity installed anyway), returns one feature set per pass and resizes with
antialiasing by default, which moves the numbers away from the reference ones. The statistics
themselves (means, covariances, matrix square root, MMD², KL) are computed here, in float64,
so that the formulas are visible and tested.

Only ``eval.features=inception`` gives numbers comparable with papers; ``random_conv`` and
``pixels`` are for tests and relative comparisons between runs of this program.

Extractors (``FEATURES``) are built as ``FEATURES.get(name)(weights, device)`` and return an
``nn.Module`` mapping images in [-1, 1] of shape [N, C, H, W] (C = 1 or 3) to a pair
(features [N, d], logits [N, k] or None); its attribute ``has_logits`` says whether the logits
(needed by the Inception Score) exist.
"""

from __future__ import annotations

import io
import math
import os
from collections.abc import Iterable, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cached_property

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from igm_cli.errors import IgmError
from igm_cli.kernels import polynomial_kernel
from igm_cli.metrics import METRICS, families
from igm_cli.registry import Registry

FEATURES = Registry("feature extractor")

# torch-fidelity's converted TF Inception weights (the name its downloader gives the file in the
# torch hub cache), and the same network as converted by pytorch-fid, which has the same keys.
INCEPTION_FILES = (
    "weights-inception-2015-12-05-6726825d.pth",
    "pt_inception-2015-12-05-6726825d.pth",
)


class FeaturesUnavailable(IgmError):
    """The feature extractor cannot be built here (weights or library missing): the caller
    prints the one-line message and goes on without the image metrics."""


# --------------------------------------------------------------------------------------------
# Feature extractors


def as_rgb(images: Tensor) -> Tensor:
    """[N, 1 or 3, H, W] -> [N, 3, H, W] (grayscale repeated); other shapes are an IgmError."""
    if images.ndim != 4 or images.shape[1] not in (1, 3):
        raise IgmError(f"image metrics need images [N, 1 or 3, H, W], got {list(images.shape)}")
    return images.expand(-1, 3, -1, -1) if images.shape[1] == 1 else images


def to_uint8(images: Tensor) -> Tensor:
    """Images in [-1, 1] -> uint8 in 0..255 by round((x + 1) · 127.5), clamped."""
    return ((images.float().clamp(-1.0, 1.0) + 1.0) * 127.5).round().to(torch.uint8)


def inception_weights_path(weights: str | None) -> str:
    """The Inception weight file: ``weights`` if given, else the first of ``INCEPTION_FILES``
    found in the torch hub cache, ``<torch.hub.get_dir()>/checkpoints`` (``$TORCH_HOME/hub`` or
    ``~/.cache/torch/hub``; torch-fidelity downloads it there). Nothing is downloaded: a missing
    file is a FeaturesUnavailable naming the file, the place looked in and ``eval.weights``."""
    if weights is not None:
        path = os.path.expanduser(str(weights))
        if not os.path.isfile(path):
            raise FeaturesUnavailable(
                f"Inception weights not found: eval.weights={weights} is not a file; image "
                f"metrics (fid/kid/is) are off"
            )
        return path
    cache = os.path.join(torch.hub.get_dir(), "checkpoints")
    for name in INCEPTION_FILES:
        path = os.path.join(cache, name)
        if os.path.isfile(path):
            return path
    raise FeaturesUnavailable(
        f"Inception weights {INCEPTION_FILES[0]} not found in {cache} and not downloaded; "
        f"give the file with eval.weights=PATH (image metrics fid/kid/is are off)"
    )


class InceptionFeatures(nn.Module):
    """torch-fidelity's InceptionV3 (TF FID weights): 2048-d pool3 features and the 1008
    logits without bias ('logits_unbiased', as in the original IS code). Images in [-1, 1] are
    turned into 3-channel uint8; the network resizes them to 299 px itself."""

    has_logits = True

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, images: Tensor) -> tuple[Tensor, Tensor]:
        features, logits = self.net(to_uint8(as_rgb(images)))
        return features.float(), logits.float()


def load_weights_safely(path: str) -> dict:
    """A state dict {name: tensor} from ``path``, unpickled with ``weights_only=True`` (a file
    that tries to run code is refused); anything else is a FeaturesUnavailable."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise FeaturesUnavailable(
            f"cannot load Inception weights from {path} safely ({first[:160]}); give the FID "
            f"Inception file with eval.weights=PATH (image metrics fid/kid/is are off)"
        ) from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise FeaturesUnavailable(
            f"cannot load Inception weights from {path} (not a state dict of tensors); give the "
            f"FID Inception file with eval.weights=PATH (image metrics fid/kid/is are off)")
    return state


@FEATURES.register(
    "inception",
    "InceptionV3 pool features (2048-d) and logits, TF FID weights; numbers comparable with papers",
)
def build_inception(weights: str | None, device) -> nn.Module:
    """The standard extractor; its weight file comes from ``eval.weights`` or the torch hub
    cache (see ``inception_weights_path``), else FeaturesUnavailable."""
    path = inception_weights_path(weights)
    try:
        from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3
    except ImportError as e:
        raise FeaturesUnavailable(
            f"eval.features=inception needs torch-fidelity ({e}); pip install torch-fidelity, "
            f"or pick another extractor; image metrics (fid/kid/is) are off"
        ) from None
    state = load_weights_safely(path)
    try:
        # torch-fidelity unpickles whatever it is given with weights_only=False: it gets the
        # tensors we loaded safely, re-serialised in memory, never the user's file.
        buffer = io.BytesIO()
        torch.save(state, buffer)
        buffer.seek(0)
        net = FeatureExtractorInceptionV3(
            "inception-v3-compat", ["2048", "logits_unbiased"],
            feature_extractor_weights_path=buffer)
    except Exception as e:  # a state dict of another network
        if isinstance(e, RuntimeError) and "state_dict" in str(e):
            first = "its keys or shapes are not those of InceptionV3"
        else:
            first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise FeaturesUnavailable(
            f"cannot load Inception weights from {path} ({first[:200]}); give the FID Inception "
            f"file with eval.weights=PATH (image metrics fid/kid/is are off)"
        ) from None
    return InceptionFeatures(net).to(device).eval()


class RandomConvFeatures(nn.Module):
    """A fixed, randomly initialised conv net (seeded: the same weights on every run and
    machine): three 3x3 convolutions (32, 64, 128 channels; the last two with stride 2) with
    leaky ReLUs, global average pooling to 128-d features, and a linear head of 10 logits.
    Grayscale images are repeated to 3 channels; any size of at least 8 px works.

    For tests and quick relative comparisons; numbers are NOT comparable with published
    Inception FID/KID/IS."""

    has_logits = True

    def __init__(self, seed: int = 0, dim: int = 128, classes: int = 10):
        super().__init__()
        self.convs = nn.ModuleList([
            nn.Conv2d(3, 32, 3, padding=1),
            nn.Conv2d(32, 64, 3, stride=2, padding=1),
            nn.Conv2d(64, dim, 3, stride=2, padding=1),
        ])
        self.head = nn.Linear(dim, classes)
        rng = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for layer in [*self.convs, self.head]:
                fan_in = layer.weight[0].numel()
                # He initialisation, so that activations keep their scale through the layers
                layer.weight.copy_(torch.randn(layer.weight.shape, generator=rng)
                                   * math.sqrt(2.0 / fan_in))
                layer.bias.copy_(torch.randn(layer.bias.shape, generator=rng) * 0.1)
        self.requires_grad_(False)
        self.eval()

    def forward(self, images: Tensor) -> tuple[Tensor, Tensor]:
        x = as_rgb(images).float()
        for conv in self.convs:
            x = F.leaky_relu(conv(x), 0.2)
        features = x.mean(dim=(2, 3))
        return features, self.head(features)


@FEATURES.register(
    "random_conv",
    "fixed seeded random conv net (128-d, 10 logits); for tests, not comparable with papers",
)
def build_random_conv(weights: str | None, device) -> nn.Module:
    """``RandomConvFeatures`` with seed 0 (``weights`` is not used)."""
    return RandomConvFeatures().to(device)


class PixelFeatures(nn.Module):
    """Raw pixels, average-pooled to size x size and flattened: C · size² features, no logits."""

    has_logits = False

    def __init__(self, size: int = 8):
        super().__init__()
        self.size = size

    def forward(self, images: Tensor) -> tuple[Tensor, None]:
        if images.ndim != 4:
            raise IgmError(f"image metrics need images [N, C, H, W], got {list(images.shape)}")
        return F.adaptive_avg_pool2d(images.float(), self.size).flatten(1), None


@FEATURES.register("pixels", "pixels average-pooled to 8x8 (C·64 features, no logits: no IS)")
def build_pixels(weights: str | None, device) -> nn.Module:
    """``PixelFeatures(8)`` (``weights`` is not used)."""
    return PixelFeatures(8).to(device)


# --------------------------------------------------------------------------------------------
# Statistics


def feature_statistics(features) -> tuple[np.ndarray, np.ndarray]:
    """Mean μ = (1/n) Σ f_i and covariance Σ = (1/(n-1)) Σ (f_i - μ)(f_i - μ)ᵀ of features
    [n, d], in float64 (numpy)."""
    f = torch.as_tensor(features).detach().to(torch.float64)
    if f.ndim != 2 or len(f) < 2:
        raise IgmError(f"FID needs at least 2 feature vectors [n, d], got {list(f.shape)}")
    mu = f.mean(0)
    centred = f - mu
    sigma = centred.T @ centred / (len(f) - 1)
    return mu.cpu().numpy(), sigma.cpu().numpy()


def _psd_sqrt(matrix: np.ndarray) -> np.ndarray:
    """Symmetric square root of a symmetric positive semi-definite matrix by eigendecomposition,
    negative round-off eigenvalues clamped to 0."""
    values, vectors = np.linalg.eigh((matrix + matrix.T) / 2)
    return (vectors * np.sqrt(np.clip(values, 0.0, None))) @ vectors.T


def frechet_distance(mu1, sigma1, mu2, sigma2) -> float:
    """Fréchet distance between N(μ1, Σ1) and N(μ2, Σ2):
    ||μ1 - μ2||² + Tr(Σ1 + Σ2 - 2 (Σ1 Σ2)^{1/2}).

    Tr (Σ1 Σ2)^{1/2} = Σ_i sqrt(λ_i) over the eigenvalues λ_i of the symmetric PSD matrix
    A = Σ1^{1/2} Σ2 Σ1^{1/2}, which is similar to Σ1 Σ2; using the symmetric eigendecomposition
    (float64) avoids the complex round-off of a general matrix square root."""
    mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
    s1, s2 = np.asarray(sigma1, np.float64), np.asarray(sigma2, np.float64)
    root1 = _psd_sqrt(s1)
    a = root1 @ s2 @ root1
    eig = np.linalg.eigvalsh((a + a.T) / 2)
    trace_sqrt = np.sqrt(np.clip(eig, 0.0, None)).sum()
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(s1) + np.trace(s2) - 2.0 * trace_sqrt)


def fid_from_features(f_real, f_fake) -> float:
    """FID between two feature sets [n, d] and [m, d]: the Fréchet distance between the
    Gaussians with their means and (n-1)-normalised covariances, in float64."""
    return frechet_distance(*feature_statistics(f_real), *feature_statistics(f_fake))


def mmd2_polynomial(x: Tensor, y: Tensor) -> Tensor:
    """Unbiased MMD² (U-statistic) of x: [m, d] and y: [m', d] under KID's cubic kernel
    k(a, b) = (a·b / d + 1)³:
    Σ_{i≠j} k(x_i, x_j) / (m(m-1)) + Σ_{i≠j} k(y_i, y_j) / (m'(m'-1)) - 2 Σ_ij k(x_i, y_j) / (m m').
    Computed in the dtype of x (float64 when called from ``kid_from_features``)."""
    return _mmd2_from_grams(
        polynomial_kernel(x, x), polynomial_kernel(y, y), polynomial_kernel(x, y))


def _mmd2_from_grams(kxx: Tensor, kyy: Tensor, kxy: Tensor) -> Tensor:
    """The unbiased MMD² of ``mmd2_polynomial`` from the three Gram matrices."""
    m, n = kxy.shape
    xx = (kxx.sum() - kxx.diagonal().sum()) / (m * (m - 1))
    yy = (kyy.sum() - kyy.diagonal().sum()) / (n * (n - 1))
    return xx + yy - 2.0 * kxy.sum() / (m * n)


def kid_from_features(
    f_real, f_fake, subsets: int = 100, subset_size: int = 1000, seed: int = 0,
    gram_limit: int = 4096,
) -> tuple[float, float]:
    """KID: the unbiased MMD² under the cubic polynomial kernel (a·b/d + 1)³ between random
    subsets of ``subset_size`` points (capped at the smaller sample size) of each feature set,
    drawn without replacement with a generator seeded by ``seed``; returns the mean and the
    standard deviation (ddof 0) of the ``subsets`` estimates. Each estimate is unbiased, so KID
    can be slightly negative when the two distributions are equal.

    Float64 on the features' device. When both sets have at most ``gram_limit`` points, the
    full Gram matrices are computed once and each subset reads its entries from them (the same
    numbers, much less work than one kernel evaluation per subset with 2048-d features)."""
    xr = torch.as_tensor(f_real).detach().to(torch.float64)
    xf = torch.as_tensor(f_fake).detach().to(torch.float64).to(xr.device)
    size = min(subset_size, len(xr), len(xf))
    if size < 2 or subsets < 1:
        raise IgmError(f"KID needs at least 2 samples per set and 1 subset, got "
                       f"{len(xr)}, {len(xf)} samples and {subsets} subsets")
    grams = None
    if max(len(xr), len(xf)) <= gram_limit:
        grams = (polynomial_kernel(xr, xr), polynomial_kernel(xf, xf), polynomial_kernel(xr, xf))
    rng = torch.Generator().manual_seed(seed)
    values = []
    for _ in range(subsets):
        i = torch.randperm(len(xr), generator=rng)[:size].to(xr.device)
        j = torch.randperm(len(xf), generator=rng)[:size].to(xr.device)
        if grams is None:
            value = mmd2_polynomial(xr.index_select(0, i), xf.index_select(0, j))
        else:
            kxx, kyy, kxy = grams
            value = _mmd2_from_grams(_block(kxx, i, i), _block(kyy, j, j), _block(kxy, i, j))
        values.append(value.item())
    v = np.asarray(values)
    return float(v.mean()), float(v.std())


def _block(gram: Tensor, rows: Tensor, cols: Tensor) -> Tensor:
    """gram[rows][:, cols] (index_select: much faster than advanced indexing on a busy CPU)."""
    return gram.index_select(0, rows).index_select(1, cols)


def inception_score(logits, splits: int = 10) -> tuple[float, float]:
    """Inception Score exp(E_x KL(p(y|x) || p(y))), with p(y|x) = softmax(logits) and p(y) the
    mean of p(y|x) over each of ``splits`` consecutive chunks (capped at the number of rows);
    returns the mean and standard deviation (ddof 0) over the chunks, in float64. It is 1 when
    every prediction is the same, and k for confident predictions spread evenly over k classes."""
    logp = torch.log_softmax(torch.as_tensor(logits).detach().to(torch.float64), dim=1)
    if logp.ndim != 2 or len(logp) < 1:
        raise IgmError(f"inception score needs logits [n, classes], got {list(logp.shape)}")
    scores = []
    for chunk in torch.tensor_split(logp, min(splits, len(logp))):
        log_py = torch.logsumexp(chunk, dim=0) - math.log(len(chunk))  # log of mean p(y|x)
        kl = (chunk.exp() * (chunk - log_py)).sum(1)  # KL(p(y|x) || p(y)) per image
        scores.append(math.exp(kl.mean().item()))
    s = np.asarray(scores)
    return float(s.mean()), float(s.std())


# --------------------------------------------------------------------------------------------
# Evaluation


ImageBatches = Tensor | Iterable[Tensor]


@dataclass
class Features:
    """One side's features [N, d] and logits [N, k] (or None), with their FID statistics
    computed on first use."""

    features: Tensor
    logits: Tensor | None

    @cached_property
    def statistics(self) -> tuple[np.ndarray, np.ndarray]:
        return feature_statistics(self.features)

    @cached_property
    def manifold(self):
        """k-NN radii of these (real) features, for precision/recall and density/coverage: of
        the first ``PRDC_SAMPLES``."""
        from igm_cli.metrics.manifold import ManifoldMetrics

        return ManifoldMetrics(self.features[:PRDC_SAMPLES])


# Precision/recall and density/coverage of image features use the first 10 000 samples of each
# side (Naeem et al. 2020 use 10 000): their k-NN balls cost N², 11 s at 10 000 samples on one
# CPU core, 92 s at Stacked Digits' 26 000 (eval.n_samples), while FID and the mode count use
# every sample.
PRDC_SAMPLES = 10_000


@METRICS.register("fid", "Fréchet distance between Gaussians fitted to real and generated "
                  "features (Heusel et al. 2017)", kind=("images",), better={"fid": "min"})
def fid_metric(real: Features, fake: Features, settings: ImageMetrics) -> dict:
    return {"fid": frechet_distance(*real.statistics, *fake.statistics)}


@METRICS.register("kid", "unbiased MMD² with the cubic kernel over feature subsets (Binkowski "
                  "et al. 2018), and its std over subsets", kind=("images",),
                  better={"kid": "min", "kid_std": None})
def kid_metric(real: Features, fake: Features, settings: ImageMetrics) -> dict:
    kid, kid_std = kid_from_features(real.features, fake.features, settings.kid_subsets,
                                     settings.kid_subset_size)
    return {"kid": kid, "kid_std": kid_std}


@METRICS.register("is", "Inception Score exp(E KL(p(y|x) || p(y))) of the generated images "
                  "(Salimans et al. 2016), and its std over splits", kind=("images",),
                  better={"is": "max", "is_std": None}, needs_logits=True)
def inception_score_metric(real: Features, fake: Features, settings: ImageMetrics) -> dict:
    score, spread = inception_score(fake.logits, settings.is_splits)
    return {"is": score, "is_std": spread}


def check_metric_names(names: Sequence[str]) -> None:
    """Each name is a registered image metric, else a one-line IgmError listing them."""
    choices = families("images")
    for name in names:
        if name not in choices:
            raise IgmError(f"unknown image metric '{name}'; choose from: {', '.join(choices)}")


@contextmanager
def no_tf32():
    """Matmuls and convolutions in full float32: TF32 (Ampere and later) moves Inception
    features, and so FID, away from the published numbers."""
    if not torch.cuda.is_available():
        yield
        return
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


class ImageMetrics:
    """The image metrics ``names`` (families of ``METRICS`` for images: fid, kid, is) of
    generated images against real ones, on the features of the extractor ``features`` (a name
    in ``FEATURES``).

    The real features (and their FID statistics) are computed once by ``real_features`` and
    reused at every ``compute``. Building with ``features='inception'`` raises
    FeaturesUnavailable (an IgmError with a one-line message) when the weights are missing;
    the trainer prints it and goes on without these metrics (see ``make_image_metrics``).
    """

    def __init__(
        self,
        names: Sequence[str],
        features: str = "inception",
        weights: str | None = None,
        device="cpu",
        batch_size: int = 250,
        kid_subsets: int = 100,
        kid_subset_size: int = 1000,
        is_splits: int = 10,
        confidence: float = 0.9,
    ):
        self.names = list(dict.fromkeys(names))
        check_metric_names(self.names)
        self.features = features
        self.device = torch.device(device)
        self.extractor = FEATURES.get(features)(weights, self.device)
        for name in self.names:
            if METRICS.info(name).get("needs_logits") and not getattr(
                    self.extractor, "has_logits", False):
                raise IgmError(
                    f"image metric '{name}' needs class logits, which feature extractor "
                    f"'{features}' does not give; drop '{name}' or use eval.features=inception "
                    f"or random_conv"
                )
        self.batch_size = batch_size
        self.kid_subsets, self.kid_subset_size, self.is_splits = (
            kid_subsets, kid_subset_size, is_splits)
        self.confidence = confidence  # digit_modes: a label counts when its probability >= this
        self._real: Features | None = None

    @torch.no_grad()
    def extract(self, images: ImageBatches) -> tuple[Tensor, Tensor | None]:
        """Features [N, d] and logits [N, k] (or None) of images in [-1, 1], given as one
        tensor [N, C, H, W] or an iterable of such batches, run through the extractor in
        batches of ``batch_size`` (TF32 off)."""
        batches = [images] if isinstance(images, Tensor) else images
        feats, logits = [], []
        with no_tf32():
            for batch in batches:
                for chunk in batch.split(self.batch_size):
                    f, lg = self.extractor(chunk.to(self.device))
                    feats.append(f.float())
                    if lg is not None:
                        logits.append(lg.float())
        if not feats:
            raise IgmError("image metrics got no images")
        return torch.cat(feats), (torch.cat(logits) if logits else None)

    def real_features(self, images: ImageBatches | None = None, refresh: bool = False) -> Tensor:
        """Features of the real images, computed on the first call (or with ``refresh``) and
        cached: later calls return the cached tensor and may leave ``images`` out."""
        if self._real is None or refresh:
            if images is None:
                raise IgmError("image metrics: no real images given")
            self._real = Features(*self.extract(images))
        return self._real.features

    def compute(self, fake_images: ImageBatches) -> dict[str, float]:
        """The requested metrics of the generated images: 'fid'; 'kid' and 'kid_std' (over the
        KID subsets); 'is' and 'is_std' (over the IS splits). FID and KID need
        ``real_features`` first."""
        fake = Features(*self.extract(fake_images))
        if self._real is None and any(n not in ("is",) for n in self.names):
            raise RuntimeError("ImageMetrics.compute: call real_features(real images) first")
        out: dict[str, float] = {}
        for name in self.names:
            out.update(METRICS.get(name)(self._real, fake, self))
        return out


def make_image_metrics(names: Sequence[str], features: str, weights: str | None, device,
                       warn=print, **kwargs) -> ImageMetrics | None:
    """``ImageMetrics(...)``, or None after one ``warn`` line when the extractor is unavailable
    (FeaturesUnavailable), so that training goes on without the image metrics. Other
    IgmErrors (unknown names, 'is' without logits) propagate: they are configuration mistakes."""
    if not names:
        return None
    try:
        return ImageMetrics(names, features, weights, device, **kwargs)
    except FeaturesUnavailable as e:
        warn(f"igm: warning: {e}; training goes on without {', '.join(names)}")
        return None
