"""Network architectures, chosen with ``arch=NAME``: MLPs for points and flattened images,
DCGAN and the SN-GAN/WGAN-GP ResNet for images."""

from igm_cli.nets.conv import DCGANArch, ResNetArch
from igm_cli.nets.mlp import MLPArch

__all__ = ["DCGANArch", "MLPArch", "ResNetArch"]
