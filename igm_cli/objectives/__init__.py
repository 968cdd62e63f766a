"""Learning principles, one file each. Importing this package registers every model."""

from igm_cli.objectives import gan  # noqa: F401  (registers gan, gan_minimax)
from igm_cli.objectives.base import Objective, Phase

__all__ = ["Objective", "Phase"]
