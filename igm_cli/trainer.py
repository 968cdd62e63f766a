"""The training loop, and nothing else: sample real data and noise, run each objective phase,
update the EMA, log, evaluate, checkpoint. It knows no method; objectives supply the losses."""

from __future__ import annotations

import contextlib
import signal
import time
from contextlib import contextmanager
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from igm_cli import __version__
from igm_cli.build import build, lr_factor
from igm_cli.checkpoint import FORMAT, load_checkpoint, save_atomic
from igm_cli.errors import IgmError
from igm_cli.evaluate import (
    EVAL_SEED,
    ImageEvaluator,
    autoencoder_extras,
    evaluate,
    generate,
    image_grid,
)
from igm_cli.plots import samples_figure
from igm_cli.runlog import RunLog, StepTimer


@contextmanager
def stop_on_signals():
    """SIGINT/SIGTERM set ``stop["signal"]``; the loop finishes its step and saves. A second
    SIGINT falls through to Python's default (KeyboardInterrupt)."""
    stop = {"signal": None}

    def handler(signum, frame):
        stop["signal"] = signum
        signal.signal(signal.SIGINT, signal.default_int_handler)

    previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield stop
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


def train(cfg: DictConfig, run_dir: Path, overrides: list[str]) -> dict:
    """Run (or resume) one training job in ``run_dir``; returns the summary it writes."""
    started = time.time()
    parts = build(cfg)
    state, dataset, objective = parts.state, parts.dataset, parts.objective
    if cfg.resume:
        restore(state, cfg)
    start_step, total, batch = state.step, cfg.train.steps, cfg.train.batch_size
    phases = objective.phases()
    log = RunLog(run_dir, total, start_step, cfg.train.print_every)
    checkpoint_file = run_dir / "checkpoints" / "last.pt"
    config = OmegaConf.to_container(cfg, resolve=True)

    def save_checkpoint(step_file: Path | None = None) -> None:
        payload = {"format": FORMAT, "igm_version": __version__, "config": config,
                   "overrides": [o for o in overrides if not o.startswith("resume=")],
                   "data_shape": list(dataset.shape),
                   **state.state_dict()}
        if log.enabled:
            save_atomic(payload, checkpoint_file)
            if step_file is not None:
                save_atomic(payload, step_file)

    images, real_logged = dataset.is_image, False
    evaluator = (ImageEvaluator(cfg.eval.metrics, cfg.eval.features, cfg.eval.weights, dataset,
                                parts.device, warn=log.message) if images else None)

    def run_evaluation() -> dict:
        nonlocal real_logged
        figures, grids = {}, {}
        if images:
            metrics = evaluator(state.sampler, parts.z_dim, cfg.eval.n_samples)
            grids["samples"] = image_grid(generate(state.sampler, cfg.eval.grid, parts.z_dim,
                                                   EVAL_SEED, parts.device))
            if not real_logged:  # once per process
                grids["real"] = image_grid(dataset.reference(cfg.eval.grid))
                real_logged = True
        else:
            metrics, fake, real = evaluate(state.sampler, dataset, parts.z_dim,
                                           cfg.eval.n_samples, parts.device)
            if cfg.eval.plot and dataset.dim <= 2:
                critic = state.nets["critic"] if "critic" in state.nets else None
                figures["samples"] = samples_figure(real, fake, critic)
        if hasattr(objective, "extra_metrics"):  # models with an encoder (Alpha-GAN)
            extra, extra_images, extra_figures = autoencoder_extras(
                objective, state.nets, dataset, parts.z_dim, cfg.eval.n_samples, parts.device,
                pictures=cfg.eval.plot)
            metrics = {**metrics, **extra}
            grids.update(extra_images)
            figures.update(extra_figures)
        log.evaluation(state.step, metrics, images=grids, figures=figures)
        return metrics

    # Speed switches (GPU): autocast, torch.compile, channels_last. The compiled modules share
    # their parameters with state.nets, which stays the one thing saved and restored.
    autocast = amp_context(cfg.train.amp, parts.device)
    scalers = state.make_scalers(parts.device) if cfg.train.amp == "fp16" else None
    channels_last = use_channels_last(cfg.train.channels_last, parts.device, images)
    if channels_last:
        state.nets.to(memory_format=torch.channels_last)
    nets = state.nets
    if cfg.train.compile:  # critics stay eager: their penalties need double backward, which
        # compiled graphs do not support ("requires create_graph=False")
        nets = torch.nn.ModuleDict({k: v if k.endswith("critic") else torch.compile(v)
                                    for k, v in state.nets.items()})

    status, metrics, note = "completed", {}, ""
    pending: list[torch.Tensor] = []  # per-step losses since the last finiteness check
    timer, loop_start = StepTimer(start_step), time.perf_counter()
    with stop_on_signals() as stop:
        while state.step < total:
            step = state.step
            state.set_lr(lr_factor(cfg.train.lr_decay, step, total))
            losses = {}
            for phase in phases:
                state.nets.requires_grad_(False)  # only this phase's networks get gradients
                for role in phase.trains:
                    state.nets[role].requires_grad_(True)
                optimizer = state.optimizers[phase.name]
                for _ in range(phase.repeats_at(step)):
                    real = dataset.sample(batch, state.data_rng)
                    if channels_last:
                        real = real.contiguous(memory_format=torch.channels_last)
                    z = torch.randn(batch, parts.z_dim, generator=state.noise_rng,
                                    device=parts.device)
                    optimizer.zero_grad(set_to_none=True)
                    with autocast():
                        loss = phase.loss(nets, real, z)
                    if scalers is None:
                        loss.backward()
                        optimizer.step()
                    else:  # fp16: scale the loss so small gradients do not underflow
                        scalers[phase.name].scale(loss).backward()
                        scalers[phase.name].step(optimizer)
                        scalers[phase.name].update()
                    objective.after_step(phase, state.nets)
                losses[f"loss/{phase.name}"] = loss.detach()
            state.update_ema()
            state.step = step + 1
            pending.append(torch.stack(list(losses.values())))

            done = state.step == total
            signalled = stop["signal"]  # read once: a signal arriving later waits for the next step
            log_now = state.step % cfg.train.log_every == 0 or done or signalled
            eval_now = state.step % cfg.eval.every == 0 or done
            ckpt_now = state.step % cfg.ckpt.every == 0 or done or signalled
            if log_now or eval_now or ckpt_now:
                bad = first_nonfinite(pending, state.step - len(pending) + 1, losses)
                pending.clear()
                if bad is None and not state.params_finite():
                    bad = state.step, "non-finite weights"
                if bad is not None:
                    status = "diverged"
                    kept = (f"kept the last good checkpoint {checkpoint_file}"
                            if checkpoint_file.exists() else "no checkpoint had been saved yet")
                    note = f"diverged at step {bad[0]} ({bad[1]}); {kept}"
                    break
            if log_now:
                values = {k: v.item() for k, v in losses.items()}
                rate = timer.rate(state.step)
                log.scalars(state.step, {**values, "perf/steps_per_sec": rate,
                                         "perf/lr": state.optimizers[phases[0].name]
                                         .param_groups[0]["lr"]})
                log.progress(state.step, values, rate)
            if eval_now:
                metrics = run_evaluation()
            if ckpt_now:
                keep = cfg.ckpt.keep_every and state.step % cfg.ckpt.keep_every == 0
                save_checkpoint(run_dir / "checkpoints" / f"step_{state.step:07d}.pt"
                                if keep else None)
            if signalled:
                status = "interrupted"
                name = signal.Signals(signalled).name
                note = f"stopped by {name} at step {state.step}; resume with resume={run_dir}"
                break

    loop_seconds = time.perf_counter() - loop_start
    steps_done = state.step - start_step
    summary = {
        "status": status,
        "steps": state.step,
        "wall_seconds": round(time.time() - started, 3),
        "steps_per_second": round(steps_done / max(loop_seconds, 1e-9), 3),
        "metrics": metrics,
        "model": cfg.model.name,
        "dataset": cfg.dataset.name,
        "seed": cfg.seed,
        "device": str(parts.device),
        "run_dir": str(run_dir),
    }
    if note:
        summary["message"] = note
        log.message(f"igm: {note}")
    log.summary(summary)
    log.close()
    return summary


AMP = {"off": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def amp_context(amp: str, device: torch.device):
    """A factory of autocast contexts for ``train.amp`` (off | bf16 | fp16)."""
    dtype = AMP[amp]
    if dtype is None:
        return contextlib.nullcontext
    return lambda: torch.autocast(device.type, dtype=dtype)


def use_channels_last(setting, device: torch.device, images: bool) -> bool:
    """``train.channels_last``: auto = on for image data on a GPU."""
    if str(setting) == "auto":
        return images and device.type == "cuda"
    return bool(setting) and images


def first_nonfinite(pending: list[torch.Tensor], first_step: int, names):
    """(step, "loss/x = nan, ...") for the first step whose losses are not all finite; else
    None. ``pending`` holds one [phases] tensor per step, checked in one sync."""
    if not pending:
        return None
    history = torch.stack(pending)  # [steps, phases]
    finite = torch.isfinite(history).all(dim=1)
    if bool(finite.all()):
        return None
    index = int((~finite).nonzero()[0])
    named = ", ".join(f"{k} = {v:g}" for k, v in zip(names, history[index].tolist()))
    return first_step + index, named


def load_resume(cfg: DictConfig) -> dict:
    """The checkpoint named by ``cfg.resume``, refused when it is another model's or already
    at ``train.steps``."""
    checkpoint = load_checkpoint(cfg.resume)
    saved_model = checkpoint["config"]["model"]["name"]
    if saved_model != cfg.model.name:
        raise IgmError(f"checkpoint '{cfg.resume}' is of model '{saved_model}', "
                       f"not '{cfg.model.name}'")
    if checkpoint["step"] >= cfg.train.steps:
        raise IgmError(f"checkpoint '{cfg.resume}' is already at step {checkpoint['step']}; "
                       f"ask for more with train.steps > {checkpoint['step']}")
    return checkpoint


def restore(state, cfg: DictConfig) -> None:
    """Load ``cfg.resume`` into ``state``."""
    checkpoint = load_resume(cfg)
    try:
        state.load_state_dict(checkpoint)
    except (KeyError, RuntimeError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0][:200]
        raise IgmError(f"checkpoint '{cfg.resume}' does not fit this configuration ({first})") \
            from None
