"""Learning principles, one file each. Importing this package registers every model."""

from igm_cli.objectives import fgan, gan, ipm, mmd, ratio  # noqa: F401  (register the models)
from igm_cli.objectives.base import Objective, Phase

__all__ = ["Objective", "Phase"]
