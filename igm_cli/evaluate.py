"""Evaluation of a generator against its data set: metrics, images and figures.

Toy sets (points): the registered point metrics (mode coverage where the modes are known, MMD²,
exact W1) on fixed noise and fixed data points. Image sets: FID/KID/IS (igm_cli/metrics/
images.py) of ``eval.n_samples`` generated images against as many training images, whose
features are computed once per run. Models with an encoder add their own metrics.

The ``Evaluator`` is what the trainer calls; it knows the network roles (the critic drawn under
the samples, the encoder of Alpha-GAN), so the trainer does not. ``evaluate_run`` is `igm eval`.
"""

from __future__ import annotations

import os
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

import torch
from omegaconf import DictConfig
from torch import nn

from igm_cli.errors import IgmError
from igm_cli.generate import EVAL_SEED, eval_mode, fixed_noise, generate, heldout_points, image_grid
from igm_cli.metrics import METRICS, better, families, headline


@dataclass
class Evaluation:
    metrics: dict[str, float]
    images: dict[str, object] = field(default_factory=dict)  # tag: [3, H, W] image


def metric_names(cfg: DictConfig, objective, is_image: bool, has_modes: bool) -> list[str]:
    """The metrics an evaluation of this run reports (image metrics only when their feature
    extractor can be built)."""
    if is_image:
        kinds = [f for f in (cfg.eval.get("metrics") or [])]
    else:
        kinds = [f for f in families("points") if has_modes or not
                 METRICS.info(f).get("needs_modes")]
    names = [n for f in kinds for n in METRICS.info(f)["better"]]
    return names + list(getattr(objective, "extra_metrics_names", ()))


def default_sweep_metric(cfg: DictConfig, is_image: bool) -> str | None:
    """w1 for points; for images fid when it is computed, else the first value of the first
    of eval.metrics, and None when no image metric is asked for (a sweeper then gets NaN)."""
    if not is_image:
        return "w1"
    chosen = list(cfg.eval.get("metrics") or [])
    if not chosen:
        return None
    if "fid" in chosen:
        return "fid"
    return next(iter(METRICS.info(chosen[0])["better"]))


def sweep_metric(cfg: DictConfig, is_image: bool) -> str | None:
    name = cfg.eval.get("sweep_metric", "auto")
    return default_sweep_metric(cfg, is_image) if name == "auto" else name


def check_metric_keys(cfg: DictConfig, objective, is_image: bool, has_modes: bool) -> None:
    """``eval.sweep_metric`` and ``ckpt.keep_best`` name metrics this run reports."""
    names = metric_names(cfg, objective, is_image, has_modes)
    kind = "images" if is_image else "points"
    chosen = sweep_metric(cfg, is_image)
    if chosen is not None and chosen not in names:
        raise IgmError(f"eval.sweep_metric '{chosen}' is not reported for {kind} "
                       f"(dataset {cfg.dataset.name}, model {cfg.model.name}); choose from: "
                       f"{', '.join(names)}")
    keep = cfg.get("ckpt", {}).get("keep_best")
    if keep:
        direction, _, name = str(keep).rpartition(":")
        if direction not in ("", "min", "max"):
            raise IgmError(f"ckpt.keep_best '{keep}': the direction must be min or max, "
                           f"as in min:w1")
        if name not in names:
            raise IgmError(f"ckpt.keep_best '{name}' is not reported for {kind}; choose from: "
                           f"{', '.join(n for n in names if better(n) or direction)}")
        if not (direction or better(name)):
            raise IgmError(f"ckpt.keep_best '{name}' has no better direction; say "
                           f"min:{name} or max:{name}")


def usable_cores() -> int:
    """The CPU cores this process may run on (its affinity mask, where the OS has one)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1  # None where the count is unknown


def in_background(setting, device) -> bool:
    """``eval.background``: true, false, or auto = in a thread unless, on the CPU, the training
    loop's threads and the evaluation's (as many: PyTorch gives a new thread the count set
    last) would be more than the cores. That slowed the loop for the rest of the run, not
    only while an evaluation ran (most likely OpenMP's shorter spin-waits with more threads
    than cores): Stacked Digits' MLP on 2 threads of 2 cores ran at 55-85 steps/s after its
    first background evaluation, 85-175 with the evaluations in its own thread (README,
    "Speed")."""
    if str(setting) != "auto":
        return bool(setting)
    return torch.device(device).type != "cpu" or 2 * torch.get_num_threads() <= usable_cores()


class Evaluator:
    """Metrics and pictures of a run's sampler. ``warn`` gets one line when the image feature
    extractor cannot be had (Inception weights missing): training goes on without those
    metrics.

    An evaluation has two parts: what needs the networks (generating the samples, the critic's
    field, an encoder's codes) runs at once on the caller's thread, since training changes the
    networks next; the rest (distances between point sets, features of images, drawing) runs
    in a background thread when ``background`` (``eval.background``, see `in_background`), on
    a core the training loop (one thread by default) leaves free. ``submit`` returns a Future
    of the Evaluation; calling the Evaluator waits for it."""

    def __init__(self, cfg: DictConfig, dataset, objective, z_dim: int, device, warn=print):
        self.dataset, self.objective, self.z_dim, self.device = dataset, objective, z_dim, device
        self.n = cfg.eval.n_samples
        self.plot, self.grid = cfg.eval.get("plot", True), cfg.eval.get("grid", 64)
        self.real_logged = False
        self.modes_total = getattr(dataset, "modes_total", None)
        self.pool = (ThreadPoolExecutor(1, thread_name_prefix="igm-eval")
                     if in_background(cfg.eval.get("background", True), device) else None)
        if dataset.is_image:
            from igm_cli.metrics.images import make_image_metrics

            self.image_metrics = make_image_metrics(
                list(cfg.eval.metrics or []), cfg.eval.features, cfg.eval.weights, device,
                warn=warn, confidence=cfg.eval.get("confidence", 0.9))
            self.real = None
        else:
            self.families = [f for f in families("points")
                             if dataset.has_modes or not METRICS.info(f).get("needs_modes")]
            # the same at every evaluation, on the CPU once: metrics cache what depends on it
            self.real = dataset.fixed_sample(self.n, EVAL_SEED).cpu()

    def __call__(self, sampler: nn.Module, nets: nn.ModuleDict, step: int) -> Evaluation:
        return self.prepare(sampler, nets, step)()

    def submit(self, sampler: nn.Module, nets: nn.ModuleDict, step: int) -> Future:
        finish = self.prepare(sampler, nets, step)
        if self.pool is not None:
            return self.pool.submit(finish)
        done = Future()
        try:
            done.set_result(finish())
        except Exception as exc:  # raised where the result is read, as from the pool
            done.set_exception(exc)
        return done

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=True)

    @torch.no_grad()
    def prepare(self, sampler: nn.Module, nets: nn.ModuleDict, step: int):
        """Does now what needs the networks; returns the function that finishes the work."""
        extra, images, figures = {}, {}, {}
        if hasattr(self.objective, "extra_metrics"):  # models with an encoder (Alpha-GAN)
            extra, images, figures = autoencoder_extras(
                self.objective, nets, self.dataset, self.z_dim, self.n, self.device,
                pictures=self.plot)
        if self.dataset.is_image:
            finish = self.prepare_images(sampler)
        else:
            finish = self.prepare_points(sampler, nets, figures)

        def finished() -> Evaluation:
            metrics, more = finish()
            metrics.update(extra)
            title = f"step {step}: {headline(metrics, self.modes_total)}"
            pictures = {**images, **more}
            for tag, fig in figures.items():
                from igm_cli.plots import figure_image

                fig.axes[0].set_title(title, fontsize=9)
                pictures[tag] = figure_image(fig)
            return Evaluation(metrics, pictures)

        return finished

    def prepare_points(self, sampler: nn.Module, nets: nn.ModuleDict, figures: dict):
        fake = generate(sampler, self.n, self.z_dim, EVAL_SEED, self.device).float().cpu()
        real = self.real
        field_ = None
        draw = self.plot and self.dataset.dim <= 2
        if draw and "critic" in nets:
            from igm_cli.plots import critic_field

            field_ = critic_field(nets["critic"], real, fake)

        def finish():
            metrics = {}
            for family in self.families:
                metrics.update(METRICS.get(family)(real, fake, self.dataset))
            if draw:
                from igm_cli.plots import samples_figure

                figures["samples"] = samples_figure(real, fake, field_)
            return metrics, {}

        return finish

    def prepare_images(self, sampler: nn.Module):
        fake = None
        if self.image_metrics is not None:
            fake = generate(sampler, self.n, self.z_dim, EVAL_SEED, self.device, batch=500)
        pictures = {"samples": image_grid(generate(sampler, self.grid, self.z_dim, EVAL_SEED,
                                                   self.device))}
        if not self.real_logged:  # once per process
            pictures["real"] = image_grid(self.dataset.reference(self.grid))
            self.real_logged = True

        def finish():
            if fake is None:
                return {}, pictures
            if self.real is None:  # features of the real images: once per run
                self.image_metrics.real_features(self.dataset.reference(self.n))
                self.real = True
            return self.image_metrics.compute(fake.float()), pictures

        return finish


@torch.no_grad()
def autoencoder_extras(objective, nets: nn.ModuleDict, dataset, z_dim: int, n: int, device,
                       pictures: bool = True) -> tuple[dict, dict, dict]:
    """(metrics, images, figures) of models with an encoder (Alpha-GAN): reconstruction error
    and code/prior MMD on held-out data (fresh points with a fixed seed for toy sets), inputs
    beside reconstructions, codes against the prior."""
    prior = fixed_noise(n, z_dim, EVAL_SEED + 2, device)
    heldout = heldout_points(dataset, n, device)
    with eval_mode(nets):
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
                pairs = torch.stack([heldout[:k], x_rec], dim=1).flatten(0, 1)  # x1, x̂1, x2...
                images["reconstructions"] = image_grid(pairs, nrow=8)
            elif heldout.shape[1] <= 2:
                figures["reconstructions"] = reconstruction_figure(heldout[:300], x_rec)
            figures["codes"] = codes_figure(objective.encode(nets, heldout[:1000]), prior[:1000])
    return metrics, images, figures


# ---------------------------------------------------------------------------- igm eval

def evaluate_run(run: str, names, n: int, features: str | None, weights: str | None,
                 device_name: str = "auto", which: str = "last") -> dict:
    """`igm eval`: metrics of a checkpoint's sampler against its data set, appended to the
    run's metrics.jsonl (with "source": "igm eval" and "n") and TensorBoard (eval/NAME).
    The Inception weights come from ``weights`` or the torch hub cache, never from the
    checkpoint (a stored path is a file someone else chose)."""
    import json

    from omegaconf import OmegaConf

    from igm_cli.build import resolve_device
    from igm_cli.checkpoint import load_checkpoint, resolve_checkpoint, run_dir_of
    from igm_cli.data import build_dataset
    from igm_cli.parallel import RANKS
    from igm_cli.sampling import load_generator

    checkpoint = load_checkpoint(run, which=which)
    cfg = OmegaConf.create(checkpoint["config"])
    device = resolve_device(device_name)
    dataset = build_dataset(cfg.dataset, device)
    if not dataset.is_image and (features is not None or weights is not None):
        given = "features" if features is not None else "weights"
        raise IgmError(f"{given}= applies to image runs; run '{run}' was trained on "
                       f"{cfg.dataset.name} (points), whose metrics need no feature extractor")
    generator, z_dim, _ = load_generator(run, str(device), checkpoint)
    if dataset.is_image:
        from igm_cli.metrics.images import ImageMetrics

        names = list(cfg.eval.get("metrics", ["fid", "kid"])) if names is None else names
        metrics_fn = ImageMetrics(names, features or cfg.eval.get("features", "inception"),
                                  weights, device, confidence=cfg.eval.get("confidence", 0.9))
        metrics_fn.real_features(dataset.reference(n))
        metrics = metrics_fn.compute(generate(generator, n, z_dim, EVAL_SEED, device, batch=500))
    else:
        real = dataset.fixed_sample(n, EVAL_SEED)
        fake = generate(generator, n, z_dim, EVAL_SEED, device).float()
        metrics = {}
        for family in families("points"):
            if dataset.has_modes or not METRICS.info(family).get("needs_modes"):
                metrics.update(METRICS.get(family)(real, fake, dataset))
        if names is not None:
            unknown = [m for m in names if m not in metrics]
            if unknown:
                raise IgmError(f"unknown metric '{unknown[0]}' for dataset {cfg.dataset.name}; "
                               f"choose from: {', '.join(metrics)}")
            metrics = {k: metrics[k] for k in names}
    if RANKS.main:
        from torch.utils.tensorboard import SummaryWriter

        run_dir = run_dir_of(resolve_checkpoint(run))
        with open(run_dir / "metrics.jsonl", "a") as f:
            f.write(json.dumps({"step": checkpoint["step"], "source": "igm eval", "n": n,
                                "checkpoint": which, **metrics}) + "\n")
        writer = SummaryWriter(str(run_dir))
        for name, value in metrics.items():
            writer.add_scalar(f"eval/{name}", value, checkpoint["step"])
        writer.close()
    return metrics
