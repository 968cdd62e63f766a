"""Data sets. Toy distributions are sampled fresh on the training device each step; image sets
(images.py) index a uint8 tensor on the device or stream through a DataLoader."""

import igm_cli.data.images  # noqa: F401  (registers the image data sets)
import igm_cli.data.stacked  # noqa: F401  (registers stacked_digits)
from igm_cli.data.toy import ToyDistribution, build_dataset, check_dataset

__all__ = ["ToyDistribution", "build_dataset", "check_dataset"]
