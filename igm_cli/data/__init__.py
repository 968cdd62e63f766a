"""Data sets. Toy distributions are sampled fresh on the training device each step."""

from igm_cli.data.toy import ToyDistribution, build_dataset

__all__ = ["ToyDistribution", "build_dataset"]
