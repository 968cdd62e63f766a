"""Alpha-GAN (Rosca, Lakshminarayanan, Warde-Farley, Mohamed 2017, "Variational approaches for
auto-encoding generative adversarial networks"); lecture, "Alpha-GAN".

An auto-encoder E: x -> z, G: z -> x whose ELBO has its two intractable parts replaced by
density-ratio estimates (the lecture's "density ratio trick", r = D/(1 - D), so log r is the
classifier's logit):
  - the likelihood term E_q(z|x)[log p(x|z)] by a synthetic likelihood: an image discriminator
    D tells data from reconstructions G(E(x)) and samples G(z), and λ‖x - G(E(x))‖₁;
  - -KL[q(z|x) || p(z)] by E[log C(z)/(1 - C(z))]: a code discriminator C tells prior draws
    z ~ N(0, I) (label 1) from codes E(x) (label 0). (arXiv v1's Algorithm 1 swaps these two
    labels; the authors confirmed the typo: C outputs 1 for the prior.)
Each network has its own loss and optimiser step, in the order encoder, generator, D, C.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from igm_cli.errors import IgmError
from igm_cli.generate import eval_mode
from igm_cli.objectives.base import Objective, Phase, r1_penalty
from igm_cli.registry import MODELS


def l1_reconstruction(x: Tensor, x_rec: Tensor) -> Tensor:
    """‖x - x̂‖₁ per sample divided by the number of entries (so λ means the same for 2-D
    points and for images), averaged over the batch."""
    return (x - x_rec).abs().flatten(1).mean(1).mean()


@MODELS.register("alpha_gan", "Alpha-GAN: auto-encoder + image and code discriminators")
class AlphaGAN(Objective):
    """Losses (lecture notation; logits d = logit D, c = logit C, so -log(D/(1-D)) = -d):
      encoder    λ‖x - G(E(x))‖₁ - c(E(x))
      generator  λ‖x - G(E(x))‖₁ - d(G(E(x))) - d(G(z))
      D          -log D(x) - log(1 - D(G(E(x)))) - log(1 - D(G(z)))
      C          -log C(z) - log(1 - C(E(x)))
    λ = ``lambda_rec``; ``r1_gamma`` > 0 adds the zero-centred penalty on D at real data (not
    in the paper; off by default). ``adversarial="nonsaturating"`` replaces each -logit term
    -log(D/(1-D)) by GAN's -log D (same sign of gradient, bounded below), for stability."""

    networks = ("generator", "encoder", "critic", "code_critic")

    def __init__(self, lambda_rec: float = 10.0, r1_gamma: float = 0.0,
                 adversarial: str = "ratio", r1_every: int = 1):
        if adversarial not in ("ratio", "nonsaturating"):
            raise IgmError(f"unknown model.adversarial '{adversarial}'; choose from: ratio, "
                           "nonsaturating")
        self.lambda_rec = lambda_rec
        self.r1_gamma = r1_gamma
        self.r1_every = r1_every  # lazy: on every k-th step, γ·k (``r1_now``)
        self.adversarial = adversarial

    def fool(self, logits: Tensor) -> Tensor:
        """The term that rewards being taken for real: -log(D/(1-D)) = -logit (the density
        ratio trick, the paper's) or -log D = softplus(-logit)."""
        return -logits.mean() if self.adversarial == "ratio" else F.softplus(-logits).mean()

    def phases(self) -> list[Phase]:
        return [
            Phase("encoder", ("encoder",), self.encoder_loss),
            Phase("generator", ("generator",), self.generator_loss),
            Phase("critic", ("critic",), self.critic_loss),
            Phase("code_critic", ("code_critic",), self.code_critic_loss),
        ]

    def encoder_loss(self, nets: nn.ModuleDict, real: Tensor, z: Tensor) -> Tensor:
        code = nets.encoder(real)
        rec = l1_reconstruction(real, nets.generator(code))
        return self.lambda_rec * rec + self.fool(nets.code_critic(code))  # fool C

    def generator_loss(self, nets: nn.ModuleDict, real: Tensor, z: Tensor) -> Tensor:
        with torch.no_grad():
            code = nets.encoder(real)
        x_rec, x_gen = nets.generator(code), nets.generator(z)
        rec = l1_reconstruction(real, x_rec)
        # synthetic likelihood: -log(D/(1-D)) on reconstructions and on samples
        return (self.lambda_rec * rec + self.fool(nets.critic(x_rec))
                + self.fool(nets.critic(x_gen)))

    def critic_loss(self, nets: nn.ModuleDict, real: Tensor, z: Tensor) -> Tensor:
        with torch.no_grad():
            x_rec, x_gen = nets.generator(nets.encoder(real)), nets.generator(z)
        gamma = self.r1_now()
        real = real.detach().requires_grad_(gamma > 0)  # the caller's tensor untouched
        d_real = nets.critic(real)
        loss = (F.softplus(-d_real).mean() + F.softplus(nets.critic(x_rec)).mean()
                + F.softplus(nets.critic(x_gen)).mean())  # data 1, reconstructions/samples 0
        if gamma > 0:
            loss = loss + r1_penalty(d_real, real, gamma)
        return loss

    def code_critic_loss(self, nets: nn.ModuleDict, real: Tensor, z: Tensor) -> Tensor:
        with torch.no_grad():
            code = nets.encoder(real)
        # prior draws 1, codes 0: -log C(z) - log(1 - C(E(x)))
        return F.softplus(-nets.code_critic(z)).mean() + F.softplus(nets.code_critic(code)).mean()

    # ------------------------------------------------------------------ evaluation extras

    @torch.no_grad()
    def _in_eval_mode(self, nets: nn.ModuleDict, fn, x: Tensor) -> Tensor:
        """fn(chunk) over chunks of x with the networks in eval mode (batch norm statistics)."""
        with eval_mode(nets):
            return torch.cat([fn(chunk) for chunk in x.split(1000)])

    def encode(self, nets: nn.ModuleDict, x: Tensor) -> Tensor:
        return self._in_eval_mode(nets, nets.encoder, x)

    def reconstruct(self, nets: nn.ModuleDict, x: Tensor) -> Tensor:
        return self._in_eval_mode(nets, lambda chunk: nets.generator(nets.encoder(chunk)), x)

    @torch.no_grad()
    def extra_metrics(self, nets: nn.ModuleDict, heldout: Tensor, prior: Tensor,
                      train_data: Tensor | None = None, heldout_labels=None,
                      train_labels=None) -> dict:
        """``rec``: mean |x - G(E(x))| per entry on held-out data; ``code_mmd``: unbiased MMD²
        between held-out codes and prior draws (RBF, bandwidths scaled by √(z_dim/2));
        ``rec_nn_agree`` (labelled data): how often a reconstruction's nearest training image
        has the input's label."""
        from igm_cli.metrics.distances import mmd

        codes = self.encode(nets, heldout)
        x_rec = self._in_eval_mode(nets, nets.generator, codes)
        unit = math.sqrt(codes.shape[1] / 2)
        out = {"rec": (heldout - x_rec).abs().mean().item(),
               "code_mmd": mmd(codes / unit, prior[: len(codes)] / unit, (0.25, 0.5, 1.0, 2.0))}
        if heldout_labels is not None and train_data is not None and train_labels is not None:
            nearest = torch.cdist(x_rec.flatten(1).float(), train_data.flatten(1).float()).argmin(1)
            agree = train_labels.to(nearest.device)[nearest] == heldout_labels.to(nearest.device)
            out["rec_nn_agree"] = agree.float().mean().item()
        return out
