"""Pictures for TensorBoard and PNG files: samples over the critic's heat map (2D), densities
(1D), Alpha-GAN's reconstructions and codes.

Figures use matplotlib's object-oriented API (``Figure``, never pyplot's global state), so they
can be drawn in the evaluation's background thread. Nothing here runs a network: the critic's
values on a grid are computed first by ``critic_field``, on the thread that trains it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

GRID_2D, GRID_1D = 100, 200  # critic evaluations per axis


@dataclass
class CriticField:
    """A critic's output on a grid covering the points: ``axes`` holds the grid's 1 or 2 axes
    (1-D arrays) and ``values`` the outputs ([n] for 1-D data, [n, n] for 2-D, x along
    columns)."""

    axes: list[np.ndarray]
    values: np.ndarray


def bounds(real: torch.Tensor, fake: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The box around both point sets, with a 10 % margin."""
    both = torch.cat([real.float().cpu(), fake.float().cpu()])
    low, high = both.min(0).values, both.max(0).values
    pad = 0.1 * (high - low) + 1e-3
    return low - pad, high + pad


@torch.no_grad()
def critic_field(critic, real: torch.Tensor, fake: torch.Tensor) -> CriticField | None:
    """The critic's output where ``samples_figure`` draws (1-D or 2-D points), in eval mode."""
    from igm_cli.generate import eval_mode

    if real.shape[1] > 2:
        return None
    low, high = bounds(real[:2000], fake[:2000])
    device = next(critic.parameters()).device
    if real.shape[1] == 1:
        axes = [torch.linspace(low.item(), high.item(), GRID_1D)]
        points = axes[0][:, None]
    else:
        axes = [torch.linspace(low[i].item(), high[i].item(), GRID_2D) for i in range(2)]
        gx, gy = torch.meshgrid(*axes, indexing="xy")
        points = torch.stack([gx.flatten(), gy.flatten()], 1)
    with eval_mode(critic):
        values = critic(points.to(device)).float().cpu()
    shape = (GRID_1D,) if real.shape[1] == 1 else (GRID_2D, GRID_2D)
    return CriticField([a.numpy() for a in axes], values.reshape(shape).numpy())


def new_figure(size: float = 5) -> tuple[Figure, object]:
    fig = Figure(figsize=(size, size), dpi=80)
    FigureCanvasAgg(fig)
    return fig, fig.subplots()


def figure_image(fig: Figure) -> np.ndarray:
    """The figure drawn into an RGB image [3, H, W] of uint8 (what TensorBoard stores)."""
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].transpose(2, 0, 1).copy()


def samples_figure(real, fake, field: CriticField | None = None, max_points: int = 2000,
                   title: str | None = None) -> Figure:
    """Real (grey) and generated (orange) samples; the critic's output as the background."""
    fig, ax = new_figure()
    draw_samples(ax, real, fake, field, max_points)
    if title:
        ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return fig


def draw_samples(ax, real, fake, field: CriticField | None = None, max_points: int = 2000,
                 legend: bool = True):
    """``samples_figure`` on a given axes (one panel of a grid): 1-D points as histograms,
    others as a scatter of their first two coordinates."""
    real, fake = real[:max_points].float().cpu(), fake[:max_points].float().cpu()
    low, high = bounds(real, fake)
    if real.shape[1] == 1:
        bins = np.linspace(low.item(), high.item(), 80)
        ax.hist(real[:, 0].numpy(), bins, density=True, alpha=0.5, color="grey", label="data")
        ax.hist(fake[:, 0].numpy(), bins, density=True, alpha=0.5, color="C1", label="model")
        if field is not None:
            ax2 = ax.twinx()
            ax2.plot(field.axes[0], field.values, color="C0", label="critic")
            ax2.set_ylabel("critic output")
        ax.set_xlabel("x")
    else:
        if field is not None:
            mesh = ax.contourf(*field.axes, field.values, levels=30, cmap="Blues")
            ax.figure.colorbar(mesh, ax=ax, fraction=0.046, pad=0.04, label="critic output")
        ax.scatter(real[:, 0], real[:, 1], s=3, color="grey", alpha=0.6, label="data")
        ax.scatter(fake[:, 0], fake[:, 1], s=3, color="C1", alpha=0.6, label="model")
        ax.set_aspect("equal")
    if legend:
        ax.legend(loc="upper right", fontsize=8)


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
    samples_figure(real, samples).savefig(out)


def _on_plane(points: torch.Tensor) -> torch.Tensor:
    """Float CPU points [n, >= 2]; 1-D points get a zero second coordinate."""
    points = points.float().cpu()
    return torch.cat([points, torch.zeros_like(points)], 1) if points.shape[1] == 1 else points


def reconstruction_figure(x, x_rec) -> Figure:
    """Arrows from each input x to its reconstruction G(E(x)) (2D points; 1D drawn on a line)."""
    x, x_rec = _on_plane(x), _on_plane(x_rec)
    fig, ax = new_figure()
    d = x_rec - x
    ax.quiver(x[:, 0], x[:, 1], d[:, 0], d[:, 1], angles="xy", scale_units="xy", scale=1,
              width=0.003, color="C1", alpha=0.7)
    ax.scatter(x[:, 0], x[:, 1], s=4, color="grey", label="input x")
    ax.scatter(x_rec[:, 0], x_rec[:, 1], s=4, color="C1", label="G(E(x))")
    ax.set_aspect("equal")
    ax.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    return fig


def codes_figure(codes, prior) -> Figure:
    """The first two code dimensions of E(x) against prior draws z ~ N(0, I)."""
    codes, prior = _on_plane(codes), _on_plane(prior)
    fig, ax = new_figure()
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
    reconstruction_figure(x, x_rec).savefig(out)
