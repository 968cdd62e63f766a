"""Mode counting on Stacked Digits (igm_cli/data/stacked.py), the Stacked-MNIST test of Unrolled
GAN, VEEGAN and PacGAN, with a quality gate.

The papers label each channel of each generated image with a pretrained digit classifier and
count the label triples hit (``modes``, of 1000) and KL(histogram of triples || uniform over
1000) (``kl_modes``). Counted that way every blurry sample still gets a label, and a plain GAN
on these small digits reaches 1000 modes with KL 0.04. So here a sample counts only when it is
*confident*: each of its three channels is labelled with probability >= ``confidence`` (0.9 by
default, ``eval.confidence``). Logged metrics:

- ``modes``, ``kl_modes``: over the confident samples only; with none, modes = 0 and
  kl_modes = log 1000 (``histogram_kl``: the value of a total collapse);
- ``confident``: the fraction of confident samples; ``confident_real``: the same for real
  stacked digits (``real_reference``), logged beside it as the level to reach;
- ``modes_all``, ``kl_modes_all``: every sample labelled by argmax, as in the papers;
- ``fd``: the Fréchet distance between Gaussians fitted to the classifier's penultimate
  features (128 per channel, the three channels concatenated) of real and generated images:
  an FID whose network was trained on this data.

The classifier (``DigitClassifier``, a small MLP on one 8x8 channel) was trained on the digits
training split (the 297 held-out digits excluded), seeded, and ships with igm
(``igm_cli/assets/digit_classifier.pt``, written by ``scripts/train_digit_classifier.py``), so
that every machine labels with the same weights: the seeded training itself is not bitwise
reproducible across CPUs or thread counts (98.99 % held out on one machine, 98.65 % on another;
other weights with 1 and 2 threads on the same one), and a labeller that differs moves every
Stacked Digits number. The shipped file carries the hash of the training data, the
hyperparameters and ``CLASSIFIER_VERSION`` it was made from; if that does not match this copy
of scikit-learn's digits, igm says so in one line and trains one, cached on disk under
``$XDG_CACHE_HOME/igm/`` (or ``~/.cache/igm/``) with that hash. Both load with
``weights_only=True``.
"""

from __future__ import annotations

import hashlib
import os
import sys
import time
from collections.abc import Iterable
from functools import partial
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from igm_cli.errors import IgmError
from igm_cli.metrics import METRICS
from igm_cli.metrics.images import FEATURES, feature_statistics, frechet_distance
from igm_cli.metrics.toy import histogram_kl

CLASSIFIER_VERSION = 1  # bump when DigitClassifier or train_digit_classifier changes
TRAINING = {"width": 512, "hidden": 128, "epochs": 30, "batch": 64, "lr": 3e-3, "shift": 1,
            "seed": 0}
SHIPPED = Path(__file__).resolve().parents[1] / "assets" / "digit_classifier.pt"
CLASSES = 1000  # label triples of three digits
METRIC_NAMES = ("modes", "kl_modes", "confident", "confident_real", "modes_all", "kl_modes_all",
                "fd")


class DigitClassifier(nn.Module):
    """One digit, [N, 1, 8, 8] in [-1, 1] -> 10 logits: an MLP 64 -> ``width`` -> ``hidden``
    -> 10 with ReLUs; the ``hidden`` units are the penultimate features. (A small CNN reached
    the same accuracy but labelled 7x slower on a CPU: convolutions on 8x8 maps are memory
    bound.)"""

    def __init__(self, width: int = 512, hidden: int = 128):
        super().__init__()
        self.layer1 = nn.Linear(64, width)
        self.layer2 = nn.Linear(width, hidden)
        self.out = nn.Linear(hidden, 10)

    def features(self, x: Tensor) -> Tensor:
        return F.relu(self.layer2(F.relu(self.layer1(x.flatten(1)))))

    def forward(self, x: Tensor) -> Tensor:
        return self.out(self.features(x))


def random_shift(x: Tensor, shift: int, generator: torch.Generator) -> Tensor:
    """Each image of [N, 1, h, w] moved by up to ``shift`` pixels in each direction, the
    uncovered border filled with the background value -1 (augmentation: digits are not
    centred the same way, and generated ones will not be either)."""
    n, _, h, w = x.shape
    padded = F.pad(x, (shift,) * 4, value=-1.0)
    dy, dx = torch.randint(0, 2 * shift + 1, (2, n), generator=generator)
    rows = (dy[:, None] + torch.arange(h))[:, :, None]  # [N, h, 1]
    cols = (dx[:, None] + torch.arange(w))[:, None, :]  # [N, 1, w]
    return padded[torch.arange(n)[:, None, None], 0, rows, cols][:, None]


def train_digit_classifier(images: Tensor, labels: Tensor, width: int, hidden: int,
                           epochs: int, batch: int, lr: float, shift: int,
                           seed: int) -> DigitClassifier:
    """Cross-entropy training of a ``DigitClassifier`` on ``images`` [N, 1, 8, 8] in [-1, 1]
    on the CPU: Adam with a one-cycle learning rate (peak ``lr``), ``epochs`` passes in
    shuffled batches of ``batch``, random shifts of up to ``shift`` pixels. Deterministic for
    a given ``seed`` (initialisation, order and shifts), without touching the global RNG."""
    rng = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = DigitClassifier(width, hidden)
    steps_per_epoch = len(images) // batch
    optimizer = torch.optim.Adam(net.parameters(), lr=lr / 3)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, lr,
                                                   total_steps=epochs * steps_per_epoch)
    net.train()
    for _ in range(epochs):
        order = torch.randperm(len(images), generator=rng)
        for step in range(steps_per_epoch):
            rows = order[step * batch:(step + 1) * batch]
            loss = F.cross_entropy(net(random_shift(images[rows], shift, rng)), labels[rows])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
    return net.eval().requires_grad_(False)


def cache_dir() -> Path:
    """$XDG_CACHE_HOME/igm, or ~/.cache/igm."""
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "igm"


def _digit_splits() -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """The digits training and held-out splits at 8x8 in [-1, 1], with labels."""
    from igm_cli.data.images import to_unit_range
    from igm_cli.data.stacked import digits_split

    train, train_labels, heldout, heldout_labels = digits_split(8)
    return to_unit_range(train), train_labels, to_unit_range(heldout), heldout_labels


def classifier_key(train: Tensor, labels: Tensor) -> str:
    """A hash of what determines the classifier: its training data, its hyperparameters and
    ``CLASSIFIER_VERSION``."""
    digest = hashlib.sha256(f"digit classifier v{CLASSIFIER_VERSION} {sorted(TRAINING.items())}"
                            .encode())
    digest.update(train.numpy().tobytes())
    digest.update(labels.numpy().astype(np.int64).tobytes())
    return digest.hexdigest()[:16]


@torch.no_grad()
def accuracy(net: DigitClassifier, images: Tensor, labels: Tensor) -> float:
    return (net(images).argmax(1) == labels).double().mean().item()


def read_classifier(path: str | os.PathLike) -> tuple[DigitClassifier, dict]:
    """A classifier file, shipped or cached, read with ``weights_only=True``: (net,
    {'heldout_accuracy', 'train_seconds'}, and 'key' when the file carries one). Raises OSError
    or a torch/pickle error when the file is missing or unreadable."""
    saved = torch.load(path, map_location="cpu", weights_only=True)
    net = DigitClassifier(TRAINING["width"], TRAINING["hidden"])
    net.load_state_dict(saved["state_dict"])
    record = {"heldout_accuracy": float(saved["heldout_accuracy"]),
              "train_seconds": float(saved["train_seconds"])}
    if "key" in saved:
        record["key"] = str(saved["key"])
    return net.eval().requires_grad_(False), record


def _train_and_check(train: Tensor, train_labels: Tensor, heldout: Tensor,
                     heldout_labels: Tensor) -> tuple[DigitClassifier, dict]:
    """The classifier trained with ``TRAINING`` and its record {'heldout_accuracy',
    'train_seconds'} (accuracy on the held-out digits)."""
    start = time.perf_counter()
    net = train_digit_classifier(train, train_labels, **TRAINING)
    seconds = time.perf_counter() - start
    return net, {"heldout_accuracy": accuracy(net, heldout, heldout_labels),
                 "train_seconds": seconds}


def write_shipped_classifier(path: str | os.PathLike = SHIPPED) -> dict:
    """Train the classifier on one thread and write it with its record and the
    ``classifier_key`` of its data to ``path``: what ``scripts/train_digit_classifier.py`` does
    to make the shipped file. Returns the record."""
    train, train_labels, heldout, heldout_labels = _digit_splits()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        net, record = _train_and_check(train, train_labels, heldout, heldout_labels)
    finally:
        torch.set_num_threads(threads)
    record["key"] = classifier_key(train, train_labels)
    torch.save({"state_dict": net.state_dict(), **record}, path)
    return record


def load_digit_classifier(cache: str | os.PathLike | None = None, warn=None,
                          shipped: str | os.PathLike | None = SHIPPED
                          ) -> tuple[DigitClassifier, dict]:
    """The digit classifier and its record {'heldout_accuracy', 'train_seconds', 'trained',
    'path'}: the ``shipped`` file when it was made from this copy of the digits (its key
    matches ``classifier_key``); else, after one ``warn`` line, the one cached in ``cache``
    (default ``cache_dir()``) if there, else trained (a few seconds on one core), checked on
    the 297 held-out digits, and saved atomically (written to a temporary file, then renamed).
    ``trained`` says whether this call trained it. An unreadable cache file is trained anew
    and replaced; a cache that cannot be written is skipped, after one ``warn`` line.
    ``shipped=None`` skips the shipped file (the tests of training and caching)."""
    train, train_labels, heldout, heldout_labels = _digit_splits()
    key = classifier_key(train, train_labels)
    if shipped is not None:
        try:
            net, record = read_classifier(shipped)
            problem = None if record.get("key") == key else "was made from other digits"
        except Exception as e:  # missing or damaged: say so, then train as before
            problem = f"cannot be read ({type(e).__name__})"
        if problem is None:
            del record["key"]
            return net, {**record, "trained": False, "path": str(shipped)}
        if warn:
            warn(f"igm: warning: the digit classifier shipped with igm ({shipped}) {problem}; "
                 f"using one trained on this machine, so Stacked Digits numbers will differ "
                 f"slightly from the README's")
    path = Path(cache or cache_dir()) / f"digit_classifier-{key}.pt"
    if path.is_file():
        try:
            net, record = read_classifier(path)
            return net, {**record, "trained": False, "path": str(path)}
        except Exception as e:  # truncated or foreign file: train again and replace it
            if warn:
                warn(f"igm: warning: cannot read {path} ({type(e).__name__}); training the "
                     f"digit classifier again")
    net, record = _train_and_check(train, train_labels, heldout, heldout_labels)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        torch.save({"state_dict": net.state_dict(), **record}, temporary)
        os.replace(temporary, path)  # atomic: readers see the old file or the whole new one
    except OSError as e:
        if warn:
            warn(f"igm: warning: cannot cache the digit classifier in {path.parent} ({e})")
    return net, {**record, "trained": True, "path": str(path)}


def _upscale_matrix(size: int) -> Tensor:
    """U [size, 8]: 1-D bilinear upscaling from 8 to ``size`` pixels (align_corners=False),
    the map dataset=digits and stacked_digits apply along each axis."""
    basis = torch.eye(8, dtype=torch.float64)[:, None, :]  # 8 one-hot rows [8, 1, 8]
    return F.interpolate(basis, size=size, mode="linear", align_corners=False)[:, 0].T


def to_8px(images: Tensor) -> Tensor:
    """[N, C, s, s] -> [N, C, 8, 8] in [-1, 1]: for s > 8 the least-squares inverse of the
    bilinear upscaling that made the data set's images, x8 = P x P^T with P = pinv(U)
    (U: ``_upscale_matrix``, condition number 3 for s = 32), so real upscaled digits come
    back to their 8x8 originals up to rounding. Pixels are clamped to [-1, 1], as for the
    other image metrics."""
    if images.ndim != 4 or images.shape[-1] != images.shape[-2] or images.shape[-1] < 8:
        raise IgmError(f"stacked digits metrics need square images [N, 3, s, s] with s >= 8, "
                       f"got {list(images.shape)}")
    size = images.shape[-1]
    x = images.float()
    if size != 8:
        p = torch.linalg.pinv(_upscale_matrix(size)).to(x)  # [8, s]
        x = p @ x @ p.T
    return x.clamp(-1.0, 1.0)


def triple_classes(digits: Tensor) -> Tensor:
    """[n, 3] digit labels -> class 100 a + 10 b + c in 0..999."""
    return digits[:, 0] * 100 + digits[:, 1] * 10 + digits[:, 2]


def mode_counts(classes: Tensor) -> tuple[int, float]:
    """(number of distinct classes, KL(histogram || uniform over 1000)); (0, log 1000) for no
    class at all (see ``histogram_kl``)."""
    return int(torch.unique(classes).numel()), histogram_kl(classes, CLASSES)


class StackedDigitsMetrics:
    """The Stacked Digits metrics (see the module text) of generated images [N, 3, s, s] in
    [-1, 1] (s = 8 or 32; any s >= 8 works).

    ``real_reference(images)`` is called once with real stacked digits (e.g. the data set's
    ``reference(n)``): it keeps their confident fraction and feature statistics; then
    ``compute(fake_images)`` returns the dict of ``METRIC_NAMES``. Images may be one tensor
    or an iterable of batches. ``classifier`` defaults to ``load_digit_classifier(cache)``."""

    def __init__(self, confidence: float = 0.9, device="cpu", batch_size: int = 4096,
                 classifier: DigitClassifier | None = None, cache=None, warn=None):
        if not 0.0 < float(confidence) <= 1.0:
            raise IgmError(f"eval.confidence must be in (0, 1], got {confidence!r}")
        self.confidence = float(confidence)
        self.device = torch.device(device)
        self.batch_size = batch_size
        if classifier is None:
            classifier, self.classifier_record = load_digit_classifier(cache, warn)
        self.classifier = classifier.to(self.device).eval()
        self.confident_real: float | None = None
        self._real_stats: tuple[np.ndarray, np.ndarray] | None = None

    @torch.no_grad()
    def label(self, images: Tensor | Iterable[Tensor]) -> tuple[Tensor, Tensor, Tensor]:
        """(digits [N, 3] by argmax, their probabilities [N, 3], features [N, 3 · hidden]:
        the penultimate features of the three channels side by side)."""
        batches = [images] if isinstance(images, Tensor) else images
        digits, probs, feats = [], [], []
        for batch in batches:
            if batch.ndim != 4 or batch.shape[1] != 3:
                raise IgmError(f"stacked digits metrics need images [N, 3, s, s], got "
                               f"{list(batch.shape)}")
            for chunk in batch.split(max(1, self.batch_size // 3)):
                x = to_8px(chunk.to(self.device))
                n = len(x)
                f = self.classifier.features(x.reshape(3 * n, 1, 8, 8))  # channel by channel
                p, d = self.classifier.out(f).softmax(1).max(1)
                digits.append(d.reshape(n, 3))
                probs.append(p.reshape(n, 3))
                feats.append(f.reshape(n, -1))
        if not digits:
            raise IgmError("stacked digits metrics got no images")
        return torch.cat(digits), torch.cat(probs), torch.cat(feats)

    def real_reference(self, images: Tensor | Iterable[Tensor]) -> dict[str, float]:
        """Keeps the confident fraction and the feature mean and covariance of real stacked
        digits; returns {'confident_real', 'modes_real'} (modes among the confident ones)."""
        digits, probs, feats = self.label(images)
        confident = (probs >= self.confidence).all(1)
        self.confident_real = confident.double().mean().item()
        self._real_stats = feature_statistics(feats)
        return {"confident_real": self.confident_real,
                "modes_real": mode_counts(triple_classes(digits[confident]))[0]}

    def compute(self, fake_images: Tensor | Iterable[Tensor]) -> dict[str, float]:
        """The metrics of generated images (``METRIC_NAMES``); needs ``real_reference``."""
        if self._real_stats is None:
            raise RuntimeError("StackedDigitsMetrics.compute: call real_reference(images) first")
        digits, probs, feats = self.label(fake_images)
        fd = frechet_distance(*self._real_stats, *feature_statistics(feats))
        return {**triple_metrics(digits, probs, self.confidence),
                "confident_real": self.confident_real, "fd": fd}


def triple_metrics(digits: Tensor, probs: Tensor, confidence: float) -> dict[str, float]:
    """modes, kl_modes (confident samples only), confident, modes_all, kl_modes_all from each
    sample's three digits [N, 3] and their probabilities [N, 3]."""
    classes = triple_classes(digits)
    confident = (probs >= confidence).all(1)  # all three channels recognised
    modes, kl = mode_counts(classes[confident])
    modes_all, kl_all = mode_counts(classes)
    return {"modes": modes, "kl_modes": kl, "confident": confident.double().mean().item(),
            "modes_all": modes_all, "kl_modes_all": kl_all}


# ---------------------------------------------------------------------------- as image metrics
# The classifier is also a feature extractor (eval.features=digits): FID on its features is the
# Fréchet distance above, precision/recall/density/coverage work on them, and the digit_modes
# family reads its logits. configs/dataset/stacked_digits.yaml chooses these.

class DigitFeatures(nn.Module):
    """Stacked digits [N, 3, s, s] in [-1, 1] -> (penultimate features of the three channels
    side by side [N, 3 · hidden], the three channels' logits [N, 30])."""

    has_logits = True

    def __init__(self, classifier: DigitClassifier):
        super().__init__()
        self.classifier = classifier

    def forward(self, images: Tensor) -> tuple[Tensor, Tensor]:
        if images.ndim != 4 or images.shape[1] != 3:
            raise IgmError(f"eval.features=digits needs stacked digits [N, 3, s, s], got "
                           f"{list(images.shape)} (it is made for dataset=stacked_digits)")
        x = to_8px(images)
        n = len(x)
        f = self.classifier.features(x.reshape(3 * n, 1, 8, 8))
        return f.reshape(n, -1), self.classifier.out(f).reshape(n, 30)


@FEATURES.register("digits", "the Stacked Digits classifier: 3 x 128 features, 3 x 10 logits "
                   "(dataset=stacked_digits only)")
def build_digit_features(weights: str | None, device) -> nn.Module:
    """``DigitFeatures`` of the shipped classifier (``weights`` is not used); a classifier that
    had to be trained here is said on stderr."""
    warn = partial(print, file=sys.stderr, flush=True)
    return DigitFeatures(load_digit_classifier(warn=warn)[0]).to(device).eval()


def _digits_and_probabilities(logits: Tensor) -> tuple[Tensor, Tensor]:
    probs, digits = logits.reshape(-1, 3, 10).softmax(-1).max(-1)
    return digits, probs


@METRICS.register("digit_modes", "Stacked Digits: modes of 1000 and KL over confidently "
                  "labelled samples, the confident fraction (real beside it), and modes_all/"
                  "kl_modes_all counted the papers' way (eval.features=digits)", kind=("images",),
                  needs_logits=True,
                  better={"modes": "max", "kl_modes": "min", "confident": "max",
                          "confident_real": None, "modes_all": "max", "kl_modes_all": "min"})
def digit_modes_metric(real, fake, settings) -> dict:
    if fake.logits.shape[1] != 30:
        raise IgmError("image metric 'digit_modes' needs eval.features=digits")
    metrics = triple_metrics(*_digits_and_probabilities(fake.logits), settings.confidence)
    _, real_probs = _digits_and_probabilities(real.logits)
    metrics["confident_real"] = (real_probs >= settings.confidence).all(1).double().mean().item()
    return metrics
