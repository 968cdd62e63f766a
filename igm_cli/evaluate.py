"""Evaluation of a generator against its data set: metrics and the TensorBoard pictures.

Toy sets: mode metrics, MMD² and exact W1 on fresh points. Image sets: FID/KID/IS
(igm_cli/metrics/images.py) of ``eval.n_samples`` generated images against as many training
images, whose features are computed once per run."""

from __future__ import annotations

import torch
from torch import nn

from igm_cli.data import ToyDistribution
from igm_cli.metrics.distances import mmd, w1
from igm_cli.metrics.toy import mode_metrics

EVAL_SEED = 2**31 - 1  # fixed evaluation noise and data, so metrics move only with the model


@torch.no_grad()
def generate(generator: nn.Module, n: int, z_dim: int, seed: int, device, batch: int = 8192):
    """n samples from ``generator`` with noise drawn from ``seed`` (same seed, same points)."""
    rng = torch.Generator(device).manual_seed(seed)
    z = torch.randn(n, z_dim, generator=rng, device=device)
    was_training = generator.training
    generator.eval()
    out = torch.cat([generator(chunk) for chunk in z.split(batch)])
    generator.train(was_training)
    return out


@torch.no_grad()
def evaluate(generator: nn.Module, dataset: ToyDistribution, z_dim: int, n: int, device):
    """Returns (metrics, fake samples, real samples): mode metrics where the data set has
    known modes, and for every data set the unbiased MMD² and the exact W1 between n generated
    and n fresh data points."""
    fake = generate(generator, n, z_dim, EVAL_SEED, device).float()
    real = dataset.sample(n, torch.Generator(device).manual_seed(EVAL_SEED))
    metrics = {}
    if dataset.has_modes:
        metrics.update(mode_metrics(fake, dataset.centers, dataset.stds))
    metrics["mmd"] = mmd(fake, real)
    metrics["w1"] = w1(fake, real)
    return metrics, fake, real


def image_grid(images: torch.Tensor, nrow: int = 8) -> torch.Tensor:
    """[N, C, H, W] in [-1, 1] -> one [3, H', W'] grid in [0, 1] for TensorBoard / PNG."""
    from torchvision.utils import make_grid

    images = images.detach().float().cpu().clamp(-1, 1).add(1).div(2)
    if images.shape[1] == 1:
        images = images.expand(-1, 3, -1, -1)
    return make_grid(images, nrow=nrow, padding=2, pad_value=1.0)


class ImageEvaluator:
    """FID/KID/IS for image runs. When the feature extractor cannot be had (Inception weights
    missing, no download), ``warn`` gets one line and evaluations return no metrics: training
    goes on."""

    def __init__(self, names, features: str, weights: str | None, dataset, device, warn=print):
        from igm_cli.metrics.images import make_image_metrics

        self.dataset, self.device, self.real_ready = dataset, device, False
        self.metrics = make_image_metrics(list(names or []), features, weights, device, warn=warn)

    @torch.no_grad()
    def __call__(self, generator: nn.Module, z_dim: int, n: int) -> dict:
        if self.metrics is None:
            return {}
        if not self.real_ready:
            self.metrics.real_features(self.dataset.reference(n))
            self.real_ready = True
        fake = generate(generator, n, z_dim, EVAL_SEED, self.device, batch=500).float()
        return self.metrics.compute(fake)


def evaluate_run(run: str, names, n: int, features: str | None, weights: str | None,
                 device_name: str = "auto") -> dict:
    """`igm eval`: metrics of a checkpoint's sampler against its data set, appended to the
    run's metrics.jsonl (with "source": "igm eval" and "n") and TensorBoard (eval/NAME)."""
    import json

    from omegaconf import OmegaConf

    from igm_cli.build import resolve_device
    from igm_cli.checkpoint import load_checkpoint, resolve_checkpoint, run_dir_of
    from igm_cli.data import build_dataset
    from igm_cli.errors import IgmError
    from igm_cli.runlog import is_main_process
    from igm_cli.sampling import load_generator

    checkpoint = load_checkpoint(run)
    cfg = OmegaConf.create(checkpoint["config"])
    device = resolve_device(device_name)
    dataset = build_dataset(cfg.dataset, device)
    generator, z_dim, _ = load_generator(run, str(device), checkpoint)
    if dataset.is_image:
        from igm_cli.metrics.images import ImageMetrics

        names = list(cfg.eval.get("metrics", ["fid", "kid"])) if names is None else names
        metrics_fn = ImageMetrics(names, features or cfg.eval.get("features", "inception"),
                                  weights or cfg.eval.get("weights"), device)
        metrics_fn.real_features(dataset.reference(n))
        metrics = metrics_fn.compute(generate(generator, n, z_dim, EVAL_SEED, device, batch=500))
    else:
        metrics, _, _ = evaluate(generator, dataset, z_dim, n, device)
        if names is not None:
            unknown = [m for m in names if m not in metrics]
            if unknown:
                raise IgmError(f"unknown metric '{unknown[0]}' for dataset {cfg.dataset.name}; "
                               f"choose from: {', '.join(metrics)}")
            metrics = {k: metrics[k] for k in names}
    if is_main_process():
        from torch.utils.tensorboard import SummaryWriter

        run_dir = run_dir_of(resolve_checkpoint(run))
        with open(run_dir / "metrics.jsonl", "a") as f:
            f.write(json.dumps({"step": checkpoint["step"], "source": "igm eval", "n": n,
                                **metrics}) + "\n")
        writer = SummaryWriter(str(run_dir))
        for name, value in metrics.items():
            writer.add_scalar(f"eval/{name}", value, checkpoint["step"])
        writer.close()
    return metrics



def heldout_points(dataset, n: int, device) -> torch.Tensor:
    """Inputs never trained on: the first n held-out images, or for toy sets n fresh points
    drawn with a fixed seed (the same at every evaluation and in `igm reconstruct`)."""
    if dataset.is_image:
        return dataset.heldout(n)
    return dataset.sample(n, torch.Generator(device).manual_seed(EVAL_SEED + 1))


@torch.no_grad()
def autoencoder_extras(objective, nets: nn.ModuleDict, dataset, z_dim: int, n: int, device,
                       pictures: bool = True) -> tuple[dict, dict, dict]:
    """(metrics, images, figures) of models with an encoder (Alpha-GAN): reconstruction error
    and code/prior MMD on held-out data (fresh points with a fixed seed for toy sets), inputs
    beside reconstructions, codes against the prior."""
    prior = torch.randn(n, z_dim, generator=torch.Generator(device).manual_seed(EVAL_SEED + 2),
                        device=device)
    heldout = heldout_points(dataset, n, device)
    if dataset.is_image:
        labels = getattr(dataset, "heldout_labels", None)
        labels = labels[: len(heldout)] if labels is not None else None
        train = dataset.reference(4000) if labels is not None else None
        train_labels = dataset.train_labels[: len(train)] if train is not None else None
        metrics = objective.extra_metrics(nets, heldout, prior, train, labels, train_labels)
    else:
        metrics = objective.extra_metrics(nets, heldout, prior)
    images, figures = {}, {}
    if pictures:
        from igm_cli.plots import codes_figure, reconstruction_figure

        k = min(32, len(heldout))
        x_rec = objective.reconstruct(nets, heldout[:k if dataset.is_image else 300])
        if dataset.is_image:
            pairs = torch.stack([heldout[:k], x_rec], dim=1).flatten(0, 1)  # x1, x̂1, x2, x̂2...
            images["reconstructions"] = image_grid(pairs, nrow=8)
        elif heldout.shape[1] <= 2:
            figures["reconstructions"] = reconstruction_figure(heldout[:300], x_rec)
        figures["codes"] = codes_figure(objective.encode(nets, heldout[:1000]), prior[:1000])
    return metrics, images, figures
