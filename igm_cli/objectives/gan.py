"""Class-probability estimation: the GAN of Goodfellow et al. 2014.

The critic outputs a logit v(x) and D(x) = sigmoid(v(x)) estimates p(y = 1 | x), the probability
that x is data. With logits, log D = -softplus(-v) and log(1 - D) = -softplus(v).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from igm_cli.objectives.base import Objective, critic_outputs, r1_penalty
from igm_cli.registry import MODELS

# ----------------------------------------------------------------------------
# Goodfellow et al. 2014, non-saturating generator loss (§3, "maximise log D(G(z))").

@MODELS.register("gan", "GAN, non-saturating generator loss -log D(G(z))")
class NonSaturatingGAN(Objective):
    def __init__(self, n_critic: int = 1, r1_gamma: float = 0.0, r1_every: int = 1):
        self.n_critic = n_critic
        self.r1_gamma = r1_gamma  # zero-centred gradient penalty on real data; 0 = off
        self.r1_every = r1_every  # lazy: on every k-th step, γ·k (``r1_now``)

    def critic_loss(self, nets: nn.ModuleDict, real: Tensor, z: Tensor) -> Tensor:
        with torch.no_grad():
            fake = nets.generator(z)
        gamma = self.r1_now()
        real = real.detach().requires_grad_(gamma > 0)  # the caller's tensor untouched
        v_real, v_fake = critic_outputs(nets.critic, real, fake)
        loss = F.softplus(-v_real).mean() + F.softplus(v_fake).mean()  # -E_p log D - E_q log(1-D)
        if gamma > 0:
            loss = loss + r1_penalty(v_real, real, gamma)
        return loss

    def generator_loss(self, nets: nn.ModuleDict, real: Tensor, z: Tensor) -> Tensor:
        return F.softplus(-nets.critic(nets.generator(z))).mean()  # -E_z log D(G(z))


# ----------------------------------------------------------------------------
# Goodfellow et al. 2014, the minimax game: the generator minimises E_z log(1 - D(G(z))).

@MODELS.register("gan_minimax", "GAN, minimax generator loss log(1 - D(G(z)))")
class MinimaxGAN(NonSaturatingGAN):
    def generator_loss(self, nets: nn.ModuleDict, real: Tensor, z: Tensor) -> Tensor:
        return -F.softplus(nets.critic(nets.generator(z))).mean()  # E_z log(1 - D(G(z)))
