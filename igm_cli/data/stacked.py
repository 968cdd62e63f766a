"""Stacked Digits: the Stacked-MNIST mode test (Metz et al. 2017, Srivastava et al. 2017, Lin et
al. 2018) on scikit-learn's 8x8 digits, which ship offline.

Each sample stacks three digit images, drawn independently from the digits training split, as
the three channels of one image, so the data has 10³ = 1000 modes: the label triples. A
pretrained classifier labels each channel of each generated image and the number of triples
hit counts the modes a generator reaches (igm_cli/metrics/digits.py)."""

from __future__ import annotations

import torch
from torch import Tensor

from igm_cli.data import images
from igm_cli.data.images import RESOLUTIONS_OF, ImageData, check_resolution, to_unit_range
from igm_cli.registry import DATASETS

RESOLUTIONS = RESOLUTIONS_OF["stacked_digits"]  # 8 (native) and 32
HELDOUT = 297  # as dataset=digits: a fixed permutation (seed 0) keeps the last 297 aside
CHUNK = 4096  # fixed stacks are drawn chunk by chunk, so the first n never depend on n
REFERENCE_SEED, HELDOUT_SEED = 1, 2


def digits_split(resolution: int = 8) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """The digits as dataset=digits splits them (the last 297 of a fixed permutation held out):
    train images [1500, 1, r, r] uint8, their labels, held-out images [297, ...], labels."""
    return images.digits_split(resolution, HELDOUT, name="stacked_digits")


def fixed_triples(n: int, pool: int, seed: int) -> Tensor:
    """n rows of 3 indices in 0..pool-1, drawn with a generator seeded by (seed, chunk) for each
    chunk of CHUNK rows: the same rows for every n (the first n of a longer draw)."""
    chunks = []
    for c in range(-(-n // CHUNK)):
        rng = torch.Generator().manual_seed(1_000_003 * seed + c)
        chunks.append(torch.randint(pool, (CHUNK, 3), generator=rng))
    return torch.cat(chunks)[:n] if chunks else torch.zeros(0, 3, dtype=torch.long)


class StackedDigits(ImageData):
    """Three independent digits of a split as the three channels of one image (pixels in
    [-1, 1]). ``sample(n, generator)`` draws fresh triples from the training split;
    ``reference(n)`` and ``heldout(n)`` are fixed stacks (the same at every call, the first n
    of one endless fixed sequence) of training and held-out digits, whose digit labels
    [n, 3] are ``reference_triples(n)`` and ``heldout_triples(n)``; the class of a stack is
    100 · first + 10 · second + third (``classes``)."""

    classes = modes_total = 1000

    def __init__(self, train: Tensor, train_labels: Tensor, heldout: Tensor,
                 heldout_labels: Tensor, device):
        super().__init__((3, *train.shape[2:]), device)
        self.train = train.to(self.device)  # [N, 1, r, r] uint8
        self.test = heldout.to(self.device)
        self.train_digit_labels = train_labels.to(self.device)
        self.heldout_digit_labels = heldout_labels.to(self.device)

    @staticmethod
    def _stack(digits: Tensor, rows: Tensor) -> Tensor:
        """digits[rows] for rows [n, 3] -> [n, 3, r, r] in [-1, 1]."""
        return to_unit_range(digits[rows.reshape(-1), 0].reshape(len(rows), 3,
                                                                 *digits.shape[2:]))

    def sample(self, n: int, generator: torch.Generator) -> Tensor:
        rows = torch.randint(len(self.train), (n, 3), generator=generator,
                             device=generator.device).to(self.device)
        return self._stack(self.train, rows)

    def _reference_rows(self, n: int) -> Tensor:
        return fixed_triples(n, len(self.train), REFERENCE_SEED).to(self.device)

    def _heldout_rows(self, n: int) -> Tensor:
        return fixed_triples(n, len(self.test), HELDOUT_SEED).to(self.device)

    def reference(self, n: int) -> Tensor:
        """n fixed stacks of training digits: the real side of the image metrics."""
        return self._stack(self.train, self._reference_rows(n))

    def heldout(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """n fixed stacks of held-out digits (never trained on; any n, digits repeat)."""
        return self._stack(self.test, self._heldout_rows(n))

    def reference_triples(self, n: int) -> Tensor:
        """Digit labels [n, 3] of ``reference(n)``, channel by channel."""
        return self.train_digit_labels[self._reference_rows(n)]

    def heldout_triples(self, n: int) -> Tensor:
        """Digit labels [n, 3] of ``heldout(n)``."""
        return self.heldout_digit_labels[self._heldout_rows(n)]


@DATASETS.register("stacked_digits",
                   "three scikit-learn digits as RGB channels: 1000 modes (Stacked MNIST, offline)")
def stacked_digits(resolution: int = 32, device="cpu"):
    """Stacked Digits at ``resolution`` 8 (native) or 32 (upscaled as dataset=digits)."""
    train, train_labels, heldout, heldout_labels = digits_split(
        check_resolution(resolution, RESOLUTIONS))
    return StackedDigits(train, train_labels, heldout, heldout_labels, device)
