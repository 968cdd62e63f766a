"""Pictures for TensorBoard: samples over the critic's heat map (2D), densities (1D)."""

from __future__ import annotations

import math

import matplotlib

matplotlib.use("Agg")  # files only; never open a window

import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402


@torch.no_grad()
def samples_figure(real, fake, critic=None, max_points: int = 2000):
    """Real (grey) and generated (orange) samples; the critic's output as the background."""
    fig, ax = plt.subplots(figsize=(5, 5), dpi=80)
    draw_samples(ax, real, fake, critic, max_points)
    fig.tight_layout()
    return fig


@torch.no_grad()
def draw_samples(ax, real, fake, critic=None, max_points: int = 2000, legend: bool = True):
    """``samples_figure`` on a given axes (one panel of a grid): 1-D points as histograms,
    others as a scatter of their first two coordinates."""
    real, fake = real[:max_points].cpu(), fake[:max_points].cpu()
    both = torch.cat([real, fake])
    low, high = both.min(0).values, both.max(0).values
    pad = 0.1 * (high - low) + 1e-3
    low, high = low - pad, high + pad
    if real.shape[1] == 1:
        bins = torch.linspace(low.item(), high.item(), 80).numpy()
        ax.hist(real[:, 0].numpy(), bins, density=True, alpha=0.5, color="grey", label="data")
        ax.hist(fake[:, 0].numpy(), bins, density=True, alpha=0.5, color="C1", label="model")
        if critic is not None:
            grid = torch.linspace(low.item(), high.item(), 200)
            out = _critic_on(critic, grid[:, None])
            ax2 = ax.twinx()
            ax2.plot(grid.numpy(), out.numpy(), color="C0", label="critic")
            ax2.set_ylabel("critic output")
        ax.set_xlabel("x")
    else:
        if critic is not None:
            xs = torch.linspace(low[0].item(), high[0].item(), 100)
            ys = torch.linspace(low[1].item(), high[1].item(), 100)
            gx, gy = torch.meshgrid(xs, ys, indexing="xy")
            out = _critic_on(critic, torch.stack([gx.flatten(), gy.flatten()], 1)).reshape(gx.shape)
            mesh = ax.contourf(gx.numpy(), gy.numpy(), out.numpy(), levels=30, cmap="Blues")
            ax.figure.colorbar(mesh, ax=ax, fraction=0.046, pad=0.04, label="critic output")
        ax.scatter(real[:, 0], real[:, 1], s=3, color="grey", alpha=0.6, label="data")
        ax.scatter(fake[:, 0], fake[:, 1], s=3, color="C1", alpha=0.6, label="model")
        ax.set_aspect("equal")
    if legend:
        ax.legend(loc="upper right", fontsize=8)


def _critic_on(critic, points):
    from igm_cli.generate import eval_mode

    device = next(critic.parameters()).device
    with eval_mode(critic):
        return critic(points.to(device)).float().cpu()


def save_samples_png(samples: torch.Tensor, dataset_cfg, out) -> None:
    """`igm sample out=FILE.png`: an image grid for image samples [N, C, H, W]; for points
    (1D/2D) a plot of the samples over fresh data of the run's data set."""
    if samples.dim() == 4:
        from torchvision.utils import save_image

        from igm_cli.generate import image_grid

        save_image(image_grid(samples, nrow=max(1, math.ceil(math.sqrt(len(samples))))), out)
        return
    if samples.dim() != 2 or samples.shape[1] > 2:
        from igm_cli.errors import IgmError

        raise IgmError(f"out=*.png draws images or 1D/2D points; these samples have shape "
                       f"{tuple(samples.shape[1:])}: use out=FILE.npy")
    from omegaconf import OmegaConf

    from igm_cli.data import build_dataset

    data = build_dataset(OmegaConf.create(dataset_cfg), "cpu")
    real = data.sample(len(samples), torch.Generator().manual_seed(0))
    fig = samples_figure(real, samples)
    fig.savefig(out)
    plt.close(fig)


def _on_plane(points: torch.Tensor) -> torch.Tensor:
    """Float CPU points [n, >= 2]; 1-D points get a zero second coordinate."""
    points = points.float().cpu()
    return torch.cat([points, torch.zeros_like(points)], 1) if points.shape[1] == 1 else points


@torch.no_grad()
def reconstruction_figure(x, x_rec):
    """Arrows from each input x to its reconstruction G(E(x)) (2D points; 1D drawn on a line)."""
    x, x_rec = _on_plane(x), _on_plane(x_rec)
    fig, ax = plt.subplots(figsize=(5, 5), dpi=80)
    d = x_rec - x
    ax.quiver(x[:, 0], x[:, 1], d[:, 0], d[:, 1], angles="xy", scale_units="xy", scale=1,
              width=0.003, color="C1", alpha=0.7)
    ax.scatter(x[:, 0], x[:, 1], s=4, color="grey", label="input x")
    ax.scatter(x_rec[:, 0], x_rec[:, 1], s=4, color="C1", label="G(E(x))")
    ax.set_aspect("equal")
    ax.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    return fig


@torch.no_grad()
def codes_figure(codes, prior):
    """The first two code dimensions of E(x) against prior draws z ~ N(0, I)."""
    codes, prior = _on_plane(codes), _on_plane(prior)
    fig, ax = plt.subplots(figsize=(5, 5), dpi=80)
    ax.scatter(prior[:, 0], prior[:, 1], s=3, color="grey", alpha=0.5, label="prior z")
    ax.scatter(codes[:, 0], codes[:, 1], s=3, color="C0", alpha=0.6, label="codes E(x)")
    ax.set_aspect("equal")
    ax.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    return fig


def save_reconstructions_png(x, x_rec, out) -> None:
    """`igm reconstruct out=FILE.png`: input beside reconstruction (images), arrows (points)."""
    if x.dim() == 4:
        from torchvision.utils import save_image

        from igm_cli.generate import image_grid

        pairs = torch.stack([x, x_rec], dim=1).flatten(0, 1)
        save_image(image_grid(pairs, nrow=2 * max(1, math.ceil(math.sqrt(len(x))))), out)
        return
    if x.shape[1] > 2:
        from igm_cli.errors import IgmError

        raise IgmError(f"out=*.png draws images or 1D/2D points; these inputs have shape "
                       f"{tuple(x.shape[1:])}: use out=FILE.npy")
    fig = reconstruction_figure(x, x_rec)
    fig.savefig(out)
    plt.close(fig)
