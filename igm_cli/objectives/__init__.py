"""Learning principles, one file each. Importing this package registers every model."""

from igm_cli.objectives import (  # noqa: F401  (register the models)
    alpha_gan,
    fgan,
    gan,
    ipm,
    mmd,
    ratio,
)
from igm_cli.objectives.base import Objective, Phase

__all__ = ["Objective", "Phase"]
