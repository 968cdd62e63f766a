"""Network architectures, chosen with ``arch=NAME``."""

from igm_cli.nets.mlp import MLPArch

__all__ = ["MLPArch"]
