"""What every objective gives the trainer: the networks it needs and its update phases.

A phase is one optimiser step on some networks: "critic" (fit the estimator of how far the
model is from the data) and "generator" (move the model to shrink that estimate). The trainer
runs the phases in order, each ``repeats`` times per training step, and knows nothing else
about the method.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor, nn

# loss(nets, real [B, ...], z [B, z_dim]) -> scalar; nets.generator, nets.critic, ...
LossFn = Callable[[nn.ModuleDict, Tensor, Tensor], Tensor]


@dataclass
class Phase:
    name: str  # logged as loss/<name>
    trains: tuple[str, ...]  # the networks whose optimiser steps on this loss
    loss: LossFn
    repeats: int | Callable[[int], int] = 1  # per training step; or a function of the step

    def repeats_at(self, step: int) -> int:
        return self.repeats(step) if callable(self.repeats) else self.repeats


class Objective:
    """Base class: subclasses set ``networks`` and return their ``phases()``."""

    networks: tuple[str, ...] = ("generator", "critic")
    step: int = 0  # the training step being run; the trainer sets it before each step
    r1_gamma: float = 0.0  # objectives with an R1 penalty set these two (``r1_now``)
    r1_every: int = 1

    def r1_now(self) -> float:
        """γ of the R1 penalty at this step. Lazy regularisation (Karras et al. 2020, StyleGAN2
        §3.1): with ``r1_every`` = k > 1 the penalty is taken on every k-th step only, scaled by
        k so that its average pull is the same, which saves most of its double backward. 0 when
        the penalty is off or not due."""
        if self.r1_gamma > 0 and self.step % self.r1_every == 0:
            return self.r1_gamma * self.r1_every
        return 0.0

    def phases(self) -> list[Phase]:
        return [
            Phase("critic", ("critic",), self.critic_loss, getattr(self, "n_critic", 1)),
            Phase("generator", ("generator",), self.generator_loss),
        ]

    def critic_loss(self, nets: nn.ModuleDict, real: Tensor, z: Tensor) -> Tensor:
        raise NotImplementedError(f"{type(self).__name__} has no critic")

    def generator_loss(self, nets: nn.ModuleDict, real: Tensor, z: Tensor) -> Tensor:
        raise NotImplementedError(f"{type(self).__name__} has no generator loss")

    def after_step(self, phase: Phase, nets: nn.ModuleDict) -> None:
        """Called after each optimiser step (e.g. WGAN's weight clipping)."""


def critic_outputs(critic: nn.Module, real: Tensor, fake: Tensor) -> tuple[Tensor, Tensor]:
    """The critic's outputs on the real and the generated batch. Critics have no batch norm, so
    a row's output does not depend on the other rows, and both batches go through in one pass
    of their concatenation: fewer kernel launches (and one spectral-norm power iteration per
    step, as in Miyato et al.). Except when ``real`` requires grad: its input gradients (R1)
    are then taken through its own pass, so that the double backward covers its rows only."""
    if real.requires_grad:
        return critic(real), critic(fake)
    out = critic(torch.cat([real, fake]))
    return out[: len(real)], out[len(real):]


def input_gradients(outputs: Tensor, inputs: Tensor) -> Tensor:
    """∇_x of each sample's output, flattened to [B, D]; differentiable (for penalties).
    ``outputs`` [B] must depend on row b of ``inputs`` only, and ``inputs`` require grad."""
    (grad,) = torch.autograd.grad(outputs.sum(), inputs, create_graph=True)
    return grad.flatten(1)


def gradient_norms(outputs: Tensor, inputs: Tensor) -> Tensor:
    """||∇_x outputs_b||₂ per sample [B], over all non-batch dims."""
    return input_gradients(outputs, inputs).norm(dim=1)


def r1_penalty(critic_out: Tensor, inputs: Tensor, gamma: float) -> Tensor:
    """Zero-centred gradient penalty on real data (Mescheder et al. 2018):
    γ/2 · E_p ||∇_x v(x)||²; ``inputs`` must have been given ``requires_grad``."""
    return gamma / 2 * input_gradients(critic_out, inputs).pow(2).sum(1).mean()
