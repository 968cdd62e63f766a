"""A hand-written loop of igm's default recipe, the reference that `scripts/bench_toy.py` times
`igm train` against.

Non-saturating GAN on 8 Gaussians on a circle (radius 2, std 0.02, a fresh batch each step):
3x128 LeakyReLU(0.2) MLPs, 2-D noise, batch 64 (`--batch`); critic loss with the zero-centred
R1 penalty γ/2·E_p‖∇D(x)‖² (γ = 1) on real data; Adam 1e-3, β (0.5, 0.99), decayed linearly
to 0; an exponential moving average (0.999) of the generator. One critic step, then one
generator step. No evaluation, no logging, no checkpoints: the simplest script a researcher
would write.

    python scripts/reference/toy_gan.py --steps 2000 [--device cuda] [--threads 1] [--batch 64]
"""

from __future__ import annotations

import argparse
import copy
import math
import time

import torch
import torch.nn.functional as F
from torch import nn


def mlp(in_dim: int, out_dim: int, hidden: int = 128, depth: int = 3) -> nn.Sequential:
    layers: list[nn.Module] = []
    for width_in in [in_dim] + [hidden] * (depth - 1):
        layers += [nn.Linear(width_in, hidden), nn.LeakyReLU(0.2)]
    return nn.Sequential(*layers, nn.Linear(hidden, out_dim))


def ring8(n: int, device: torch.device) -> torch.Tensor:
    """n points: a uniformly chosen mode 2·(cos 2πk/8, sin 2πk/8) plus 0.02·N(0, I)."""
    angle = 2 * math.pi / 8 * torch.randint(0, 8, (n,), device=device)
    centre = 2.0 * torch.stack([angle.cos(), angle.sin()], dim=1)
    return centre + 0.02 * torch.randn(n, 2, device=device)


def train(steps: int, device: str = "cpu", batch: int = 64, gamma: float = 1.0,
          ema_decay: float = 0.999, seed: int = 0) -> dict:
    """Train for ``steps`` generator steps; returns the last losses (floats)."""
    torch.manual_seed(seed)
    device = torch.device(device)
    generator, critic = mlp(2, 2).to(device), mlp(2, 1).to(device)
    generator_ema = copy.deepcopy(generator).requires_grad_(False)
    opt_g = torch.optim.Adam(generator.parameters(), lr=1e-3, betas=(0.5, 0.99))
    opt_d = torch.optim.Adam(critic.parameters(), lr=1e-3, betas=(0.5, 0.99))
    linear_to_zero = lambda step: 1 - step / steps  # noqa: E731
    schedulers = [torch.optim.lr_scheduler.LambdaLR(opt, linear_to_zero) for opt in (opt_g, opt_d)]

    for _ in range(steps):
        # Critic: -E_p log D(x) - E_q log(1 - D(x)) with D = sigmoid(v), plus γ/2·E_p‖∇v(x)‖².
        critic.requires_grad_(True)
        real = ring8(batch, device).requires_grad_(True)
        with torch.no_grad():
            fake = generator(torch.randn(batch, 2, device=device))
        v_real, v_fake = critic(real), critic(fake)
        (grad,) = torch.autograd.grad(v_real.sum(), real, create_graph=True)
        loss_d = (F.softplus(-v_real).mean() + F.softplus(v_fake).mean()
                  + gamma / 2 * grad.pow(2).sum(dim=1).mean())
        opt_d.zero_grad(set_to_none=True)
        loss_d.backward()
        opt_d.step()

        # Generator, non-saturating: -E_z log D(G(z)).
        critic.requires_grad_(False)
        loss_g = F.softplus(-critic(generator(torch.randn(batch, 2, device=device)))).mean()
        opt_g.zero_grad(set_to_none=True)
        loss_g.backward()
        opt_g.step()

        for scheduler in schedulers:
            scheduler.step()
        with torch.no_grad():  # ema <- ema + (1 - decay)(θ - ema)
            for p_ema, p in zip(generator_ema.parameters(), generator.parameters()):
                p_ema.lerp_(p, 1 - ema_decay)
    return {"critic": loss_d.item(), "generator": loss_g.item()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads (torch)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch", type=int, default=64, help="points per batch (igm's default)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    losses = train(args.steps, args.device, batch=args.batch, seed=args.seed)
    seconds = time.perf_counter() - started
    print(f"{args.steps} steps in {seconds:.2f} s ({args.steps / seconds:.1f} steps/s); "
          f"last loss critic {losses['critic']:.4f} generator {losses['generator']:.4f}")


if __name__ == "__main__":
    main()
