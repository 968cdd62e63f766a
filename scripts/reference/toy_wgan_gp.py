"""A hand-written loop of Gulrajani et al.'s toy WGAN-GP recipe, the reference that
`scripts/bench_toy.py` times `igm train model=wgan_gp ...` against.

8 Gaussians on a circle (radius 2, std 0.02, a fresh batch for every critic and generator step);
3x512 ReLU MLPs, 2-D noise, batch 256; critic loss E_q f - E_p f + λ·E(‖∇f(x̂)‖₂ - 1)² on random
interpolates x̂ = εx + (1 - ε)x̃ with λ = 0.1 (their toy setting); 5 critic steps per generator
step; Adam 1e-4, β (0.5, 0.9); no learning-rate decay, no generator average. No evaluation, no
logging, no checkpoints.

    python scripts/reference/toy_wgan_gp.py --steps 200 [--device cuda] [--threads 1]
"""

from __future__ import annotations

import argparse
import math
import time

import torch
from torch import nn


def mlp(in_dim: int, out_dim: int, hidden: int = 512, depth: int = 3) -> nn.Sequential:
    layers: list[nn.Module] = []
    for width_in in [in_dim] + [hidden] * (depth - 1):
        layers += [nn.Linear(width_in, hidden), nn.ReLU()]
    return nn.Sequential(*layers, nn.Linear(hidden, out_dim))


def ring8(n: int, device: torch.device) -> torch.Tensor:
    """n points: a uniformly chosen mode 2·(cos 2πk/8, sin 2πk/8) plus 0.02·N(0, I)."""
    angle = 2 * math.pi / 8 * torch.randint(0, 8, (n,), device=device)
    centre = 2.0 * torch.stack([angle.cos(), angle.sin()], dim=1)
    return centre + 0.02 * torch.randn(n, 2, device=device)


def train(steps: int, device: str = "cpu", batch: int = 256, gp_lambda: float = 0.1,
          n_critic: int = 5, seed: int = 0) -> dict:
    """Train for ``steps`` generator steps; returns the last losses (floats)."""
    torch.manual_seed(seed)
    device = torch.device(device)
    generator, critic = mlp(2, 2).to(device), mlp(2, 1).to(device)
    opt_g = torch.optim.Adam(generator.parameters(), lr=1e-4, betas=(0.5, 0.9))
    opt_d = torch.optim.Adam(critic.parameters(), lr=1e-4, betas=(0.5, 0.9))

    for _ in range(steps):
        critic.requires_grad_(True)
        for _ in range(n_critic):
            real = ring8(batch, device)
            with torch.no_grad():
                fake = generator(torch.randn(batch, 2, device=device))
            eps = torch.rand(batch, 1, device=device)
            x_hat = (eps * real + (1 - eps) * fake).requires_grad_(True)
            (grad,) = torch.autograd.grad(critic(x_hat).sum(), x_hat, create_graph=True)
            penalty = gp_lambda * (grad.norm(dim=1) - 1).pow(2).mean()
            loss_d = critic(fake).mean() - critic(real).mean() + penalty  # -(E_p f - E_q f) + GP
            opt_d.zero_grad(set_to_none=True)
            loss_d.backward()
            opt_d.step()

        critic.requires_grad_(False)
        loss_g = -critic(generator(torch.randn(batch, 2, device=device))).mean()  # -E_q f
        opt_g.zero_grad(set_to_none=True)
        loss_g.backward()
        opt_g.step()
    return {"critic": loss_d.item(), "generator": loss_g.item()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=200, help="generator steps")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads (torch)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    losses = train(args.steps, args.device, seed=args.seed)
    seconds = time.perf_counter() - started
    print(f"{args.steps} generator steps in {seconds:.2f} s ({args.steps / seconds:.2f} steps/s); "
          f"last loss critic {losses['critic']:.4f} generator {losses['generator']:.4f}")


if __name__ == "__main__":
    main()
