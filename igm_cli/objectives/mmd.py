"""Kernel moment matching: move the model until its kernel mean embedding meets the data's.

MMD²(P, Q) = E k(x, x') - 2 E k(x, y) + E k(y, y') (notes §5), estimated on a data batch x and a
generated batch y with igm_cli/kernels.py. GMMN uses a fixed kernel on the data; MMD-GAN learns
the kernel, k(φ(x), φ(y)) on the features φ of a critic that maximises MMD² while the generator
minimises it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from igm_cli.errors import IgmError
from igm_cli.kernels import make_kernel, mmd2_biased, mmd2_unbiased
from igm_cli.objectives.base import Objective, Phase, gradient_norms
from igm_cli.objectives.ipm import interpolate
from igm_cli.registry import MODELS

ESTIMATORS = {"biased": mmd2_biased, "unbiased": mmd2_unbiased}

# Bandwidths for the 2D toy sets. ring8 has modes of std 0.02, 1.53 apart, on a circle of
# diameter 4; grid25 has modes 2 apart spanning 8. A small h (0.05-0.1, a few mode stds) sees only
# near neighbours and pulls samples tight onto a mode (the 3-std "high quality" radius is 0.06);
# h around the mode spacing (0.5-2) tells modes apart and spreads mass over them; a large h (4)
# still has gradient when a sample is far from everything (e.g. at the start).
TOY_BANDWIDTHS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 4.0)


def mmd_estimator(name: str):
    if name not in ESTIMATORS:
        raise IgmError(f"unknown model.estimator '{name}'; choose from: {', '.join(ESTIMATORS)}")
    return ESTIMATORS[name]


# ----------------------------------------------------------------------------
# Li, Swersky, Zemel 2015 (GMMN) and Dziugaite, Roy, Ghahramani 2015: the generator minimises
# MMD² (GMMN: its square root) under a fixed sum of RBF kernels; there is no critic.


@MODELS.register("gmmn", "generative moment matching network: minimise MMD² with fixed RBF kernels")
class GMMN(Objective):
    networks = ("generator",)

    def __init__(self, bandwidths: Sequence[float] = TOY_BANDWIDTHS, sqrt: bool = True,
                 estimator: str = "biased"):
        self.kernel = make_kernel("rbf", bandwidths=tuple(float(h) for h in bandwidths))
        self.mmd2 = mmd_estimator(estimator)
        self.sqrt = sqrt

    def phases(self) -> list[Phase]:
        return [Phase("generator", ("generator",), self.generator_loss)]

    def generator_loss(self, nets: nn.ModuleDict, real: Tensor, z: Tensor) -> Tensor:
        fake = nets.generator(z)
        # The bandwidths are set for 2-D points; in D dimensions squared distances grow like D,
        # so distances are measured in units of √(D/2) (same kernel as every h times √(D/2)).
        unit = math.sqrt(real[0].numel() / 2)
        mmd2 = self.mmd2(real.flatten(1) / unit, fake.flatten(1) / unit, self.kernel)  # MMD²
        # sqrt(MMD²) (GMMN); the floor keeps the gradient finite at 0 (or a negative U-statistic)
        return mmd2.clamp_min(1e-12).sqrt() if self.sqrt else mmd2


# ----------------------------------------------------------------------------
# Binkowski, Sutherland, Arbel, Gretton 2018, "Demystifying MMD GANs": MMD GAN with a
# rational-quadratic mixture on learned features and a gradient penalty on the witness function.

@MODELS.register("mmd_gan", "MMD GAN: kernel MMD² on critic features, witness gradient penalty")
class MMDGAN(Objective):
    """MMD GAN, the Binkowski et al. 2018 variant rather than Li et al. 2017's clipped one.

    Why: Li et al. need weight clipping (as WGAN, slow on the toys at lr 5e-5) plus an
    auto-encoder term to keep φ injective; Binkowski et al. show the clipping is what hurts and
    replace it by a WGAN-GP style penalty λ E(||∇_x̂ w(x̂)|| - 1)² on the MMD witness
    w(x) = mean_i k(φ(x), φ(x_i)) - mean_j k(φ(x), φ(y_j)), with the unbiased MMD² and a
    rational-quadratic mixture k (α in {0.2, 0.5, 1, 2, 5}), which keeps gradients when features
    are far apart. Defaults: λ = 1 (their MMD GAN setting), n_critic 5.

    The critic network is the arch's ``feature_critic`` role: x -> φ(x) in R^features.
    """

    networks = ("generator", "feature_critic")

    def __init__(self, alphas: Sequence[float] = (0.2, 0.5, 1.0, 2.0, 5.0), gp_lambda: float = 1.0,
                 n_critic: int = 5, kernel: str = "rational_quadratic",
                 bandwidths: Sequence[float] = (1.0, 2.0, 4.0, 8.0, 16.0)):
        if kernel == "rational_quadratic":
            self.kernel = make_kernel(kernel, alphas=tuple(float(a) for a in alphas))
        elif kernel == "rbf":  # Li et al. 2017's mixture of RBF kernels on the features
            self.kernel = make_kernel(kernel, bandwidths=tuple(float(h) for h in bandwidths))
        else:
            raise IgmError(f"unknown model.kernel '{kernel}'; choose from: rational_quadratic, rbf")
        self.gp_lambda = gp_lambda
        self.n_critic = n_critic

    def phases(self) -> list[Phase]:
        return [
            Phase("critic", ("feature_critic",), self.critic_loss, self.n_critic),
            Phase("generator", ("generator",), self.generator_loss),
        ]

    def critic_loss(self, nets: nn.ModuleDict, real: Tensor, z: Tensor) -> Tensor:
        with torch.no_grad():
            fake = nets.generator(z)
        phi = nets.feature_critic
        phi_real, phi_fake = phi(real), phi(fake)  # [B, features]
        mmd2 = mmd2_unbiased(phi_real, phi_fake, self.kernel)
        if self.gp_lambda == 0:
            return -mmd2
        x_hat = interpolate(real, fake).requires_grad_(True)
        phi_hat = phi(x_hat)
        witness = self.kernel(phi_hat, phi_real).mean(1) - self.kernel(phi_hat, phi_fake).mean(1)
        penalty = self.gp_lambda * (gradient_norms(witness, x_hat) - 1).pow(2).mean()
        return -mmd2 + penalty  # max_φ MMD²_u - λ E(||∇w(x̂)||₂ - 1)²

    def generator_loss(self, nets: nn.ModuleDict, real: Tensor, z: Tensor) -> Tensor:
        phi = nets.feature_critic
        fake = nets.generator(z)
        return mmd2_unbiased(phi(real), phi(fake), self.kernel)  # MMD²_u(φ(x), φ(G(z)))
