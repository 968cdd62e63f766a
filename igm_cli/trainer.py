"""The training loop, and nothing else: draw real data and noise, run each objective phase
(``train_step``), update the EMA, log, evaluate, checkpoint. It names no network role and no
model: objectives supply the losses, the Evaluator the metrics, build.py the networks.

Every ending is a summary: ``train`` returns the summary it wrote to ``summary.json``, whose
``status`` is completed, interrupted (a signal: the step finishes and a checkpoint is written),
diverged (a non-finite loss or weight: the last good checkpoint is kept) or failed (an error:
one line on the console, the traceback in ``train.log``), and whose ``exit_code`` is what the
command exits with.
"""

from __future__ import annotations

import contextlib
import copy
import os
import signal
import time
import traceback
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf, open_dict
from torch import nn

from igm_cli import parallel, rundir
from igm_cli.build import Parts, build, check_config, describe_params, lr_factor
from igm_cli.checkpoint import Checkpoints, DiskFull, load_checkpoint
from igm_cli.errors import IgmError
from igm_cli.evaluate import Evaluator
from igm_cli.objectives import Phase
from igm_cli.runlog import RunLog, StepTimer, announce, finish, hparams_of, write_json_atomic

EXIT = {"completed": 0, "failed": 1, "input": 2, "diverged": 3, "SIGINT": 130, "SIGTERM": 143}


# ---------------------------------------------------------------------------- signals

class Stopper:
    """SIGINT/SIGTERM set ``signal``; the loop finishes its step, saves and stops. A second
    SIGINT stops at once (KeyboardInterrupt), except inside ``critical()`` (a checkpoint being
    written), where it waits for the write to finish."""

    def __init__(self):
        self.signal: int | None = None
        self.depth = 0
        self.abort = False

    def handler(self, signum, frame):
        if self.signal is None:
            self.signal = signum
        elif signum == signal.SIGINT:
            if self.depth:
                self.abort = True
            else:
                raise KeyboardInterrupt

    @contextlib.contextmanager
    def critical(self):
        self.depth += 1
        try:
            yield
        finally:
            self.depth -= 1
        if self.abort and not self.depth:
            raise KeyboardInterrupt


def preemption_signal() -> signal.Signals:
    """The signal a scheduler sends before it stops a job: submitit's (SLURM's --signal) USR2,
    or what SUBMITIT_PREEMPT_SIGNAL names."""
    name = os.environ.get("SUBMITIT_PREEMPT_SIGNAL", "USR2").upper().removeprefix("SIG")
    return getattr(signal, f"SIG{name}", signal.SIGUSR2)


# What the preemption signal's previous handler (submitit's: requeue this job) should do once
# the checkpoint and the summary are written; run by `train` at its very end.
_AFTER_STOP: list = []


@contextlib.contextmanager
def stop_on_signals():
    """SIGINT, SIGTERM and the preemption signal stop the loop at the end of a step. When the
    preemption signal had a handler (submitit requeues the job from it), that handler runs
    after the run has saved everything (``_AFTER_STOP``); the requeued job continues from the
    checkpoint (``ckpt.auto_resume``)."""
    stopper = Stopper()
    preempt = preemption_signal()
    signals = (signal.SIGINT, signal.SIGTERM, preempt)
    previous = {s: signal.signal(s, stopper.handler) for s in signals}
    try:
        yield stopper
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
        if stopper.signal == preempt and callable(previous[preempt]):
            _AFTER_STOP.append(lambda: previous[preempt](preempt, None))


# ---------------------------------------------------------------------------- one step

@dataclass
class PhasePlan:
    """One phase as the loop runs it: the networks as this phase calls them (DDP/compiled
    wrappers of the roles it trains), its optimiser and gradient scaler, and which parameters
    take gradients while it runs."""

    phase: Phase
    nets: nn.ModuleDict
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    grads_on: list[nn.Parameter]
    grads_off: list[nn.Parameter]


def phase_plans(parts: Parts) -> list[PhasePlan]:
    state = parts.state
    every = list(state.nets.parameters())
    plans = []
    for phase in parts.objective.phases():
        on = [p for role in phase.trains for p in state.nets[role].parameters()]
        ids = {id(p) for p in on}
        plans.append(PhasePlan(phase, parts.phase_nets[phase.name],
                               state.optimizers[phase.name], state.scalers[phase.name],
                               on, [p for p in every if id(p) not in ids]))
    return plans


def train_step(plans: list[PhasePlan], draw: Callable[[], tuple[torch.Tensor, torch.Tensor]],
               autocast, after_step, step: int) -> list[torch.Tensor]:
    """One training step: each phase's optimiser steps (``repeats_at(step)`` of them), each on
    a fresh batch of data and noise. Returns each phase's last loss (detached, not synced)."""
    losses = []
    for plan in plans:
        for p in plan.grads_off:  # only this phase's networks get weight gradients
            p.requires_grad_(False)
        for p in plan.grads_on:
            p.requires_grad_(True)
        for _ in range(plan.phase.repeats_at(step)):
            real, z = draw()
            plan.optimizer.zero_grad(set_to_none=True)
            with autocast():
                loss = plan.phase.loss(plan.nets, real, z)
            plan.scaler.scale(loss).backward()  # fp16: scaled so small gradients survive
            plan.scaler.step(plan.optimizer)
            plan.scaler.update()
            after_step(plan.phase)
        losses.append(loss.detach())
    return losses


AMP = {"off": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def amp_context(amp: str, device: torch.device):
    """A factory of autocast contexts for ``train.amp`` (off | bf16 | fp16)."""
    dtype = AMP[amp]
    if dtype is None:
        return contextlib.nullcontext
    return lambda: torch.autocast(device.type, dtype=dtype)


def first_nonfinite(pending: list[list[torch.Tensor]], first_step: int, names):
    """(step, "loss/x = nan, ...") for the first step whose losses are not all finite; else
    None. ``pending`` holds each step's phase losses, checked with one sync."""
    if not pending:
        return None
    history = torch.stack([torch.stack(losses) for losses in pending]).float()  # [steps, phases]
    finite = torch.isfinite(history).all(dim=1)
    if bool(finite.all()):
        return None
    index = int((~finite).nonzero()[0])
    named = ", ".join(f"{k} = {v:g}" for k, v in zip(names, history[index].tolist()))
    return first_step + index, named


# ---------------------------------------------------------------------------- the run

def train(cfg: DictConfig, run_dir: Path, overrides: list[str]) -> dict:
    """Run (or resume) one training job in ``run_dir``; returns the summary it writes."""
    started = time.time()
    main = parallel.RANKS.main
    run_dir = Path(run_dir)
    if main:
        rundir.lock(run_dir)
        write_json_atomic({"status": "running", "pid": os.getpid(),
                           "started": time.strftime("%Y-%m-%d %H:%M:%S"),
                           "run_dir": str(run_dir)}, run_dir / "summary.json")
    log: RunLog | None = None
    summary = {"status": "failed", "steps": 0}
    try:
        check_config(cfg)
        parts = build(cfg)
        own = run_dir / "checkpoints" / "last.pt"
        if not cfg.resume and cfg.ckpt.get("auto_resume", True) and own.exists():
            cfg = with_resume(cfg, own)  # a requeued job, in its own folder: continue
        if cfg.resume:
            restore(parts.state, cfg)
        log = RunLog(run_dir, cfg.train.steps, parts.state.step, cfg.train.print_every, main)
        summary = run(cfg, parts, log, run_dir, overrides, started)
    except KeyboardInterrupt:
        summary.update(status="interrupted", exit_code=EXIT["SIGINT"],
                       message=f"stopped by a second SIGINT; the last checkpoint in "
                               f"{run_dir / 'checkpoints'} is intact; resume with resume={run_dir}")
    except IgmError as exc:
        summary.update(status="failed", message=str(exc),
                       exit_code=EXIT["failed"] if isinstance(exc, DiskFull) else EXIT["input"])
    except Exception as exc:  # anything unexpected: one line here, the traceback in train.log
        first = (str(exc).strip().splitlines() or [""])[0][:300]
        summary.update(status="failed", exit_code=EXIT["failed"],
                       message=f"{type(exc).__name__}: {first} (traceback in "
                               f"{run_dir / 'train.log'})")
        if main:
            with open(run_dir / "train.log", "a") as f:
                f.write(traceback.format_exc())
    finally:
        parallel.destroy_process_group()
    summary.setdefault("exit_code", EXIT["completed"])
    summary.setdefault("wall_seconds", round(time.time() - started, 3))
    for key, value in (("metrics", {}), ("model", OmegaConf.select(cfg, "model.name")),
                       ("dataset", OmegaConf.select(cfg, "dataset.name")),
                       ("seed", OmegaConf.select(cfg, "seed")), ("run_dir", str(run_dir))):
        summary.setdefault(key, value)  # a run that failed early still says what it was
    if summary["status"] == "failed":  # the command prints it as its error line
        if log is not None:
            log.message(f"igm: error: {summary['message']}", console=False)
    elif summary["status"] != "completed" and "message" in summary:
        (log.message if log is not None else _print_if_main)(f"igm: {summary['message']}")
    if main:
        try:
            write_json_atomic(summary, run_dir / "summary.json")
        except OSError as exc:  # e.g. the disk is full: the console line above still says why
            _print_if_main(f"igm: could not write summary.json ({exc.strerror})")
    if log is not None:
        log.close()
    if main:
        rundir.unlock(run_dir)
    while _AFTER_STOP:  # e.g. submitit's requeue, now that the checkpoint is safe
        _AFTER_STOP.pop()()
    return summary


def with_resume(cfg: DictConfig, checkpoint: Path) -> DictConfig:
    cfg = copy.deepcopy(cfg)
    with open_dict(cfg):
        cfg.resume = str(checkpoint)
    return cfg


def _print_if_main(text: str) -> None:
    if parallel.RANKS.main:
        print(text, flush=True)


def run(cfg: DictConfig, parts: Parts, log: RunLog, run_dir: Path, overrides: list[str],
        started: float) -> dict:
    state, dataset, objective, device = parts.state, parts.dataset, parts.objective, parts.device
    ranks = parallel.RANKS
    start_step, total, batch = state.step, cfg.train.steps, cfg.train.batch_size
    announce(log, cfg, device, f"{parts.z_dim}-D noise; {describe_params(state.nets)}", run_dir,
             start_step)
    plans = phase_plans(parts)
    names = [f"loss/{plan.phase.name}" for plan in plans]
    if cfg.train.get("amp") == "auto":
        chosen = ("bf16 autocast (native bfloat16 on {})" if parts.amp == "bf16"
                  else "off (no native bfloat16 on {})")
        log.message(f"igm: train.amp=auto: {chosen.format(device.type)}")
    autocast = amp_context(parts.amp, device)
    evaluator = Evaluator(cfg, dataset, objective, parts.z_dim, device, warn=log.message) \
        if ranks.main else None
    rows = ranks.rows(batch)

    def draw() -> tuple[torch.Tensor, torch.Tensor]:
        """The global batch of data and noise from the seeded streams; this rank's rows."""
        real = dataset.sample(batch, state.data_rng)
        z = torch.randn(batch, parts.z_dim, generator=state.noise_rng, device=device)
        if ranks.distributed:
            real, z = real[rows], z[rows]
        if parts.channels_last:
            real = real.contiguous(memory_format=torch.channels_last)
        return real, z

    def after_step(phase: Phase) -> None:
        objective.after_step(phase, state.nets)

    pending_evaluations: deque = deque()  # (step, Future of an Evaluation, best.pt payload)

    def log_evaluation(step: int, future, payload) -> dict:
        evaluation = future.result()
        log.evaluation(step, evaluation)
        if checkpoints.consider_best(evaluation.metrics, step, payload):
            log.message(f"  best {checkpoints.keep_best[0]} so far: saved "
                        f"{checkpoints.folder / 'best.pt'} (step {step})")
        return evaluation.metrics

    # The periods, read once: a DictConfig lookup costs ~10 µs, five a step add up on a toy run
    lr_decay, log_every, eval_every = cfg.train.lr_decay, cfg.train.log_every, cfg.eval.every
    ckpt_every, keep_every = cfg.ckpt.every, cfg.ckpt.keep_every
    status, metrics, note, steps_done_at = "completed", {}, "", None
    pending: list[list[torch.Tensor]] = []  # each step's losses since the last check
    timer, loop_start = StepTimer(start_step), time.perf_counter()
    with stop_on_signals() as stopper:
        checkpoints = Checkpoints(cfg, run_dir, overrides, parts, stopper)
        while state.step < total:
            step = state.step
            state.set_lr(lr_factor(lr_decay, step, total))
            objective.step = step  # losses that change over the run read it (lazy R1)
            losses = train_step(plans, draw, autocast, after_step, step)
            state.update_ema()
            state.step = step + 1
            pending.append(losses)

            done = state.step == total
            signalled = parallel.any_rank(stopper.signal is not None)  # read once per step
            log_now = state.step % log_every == 0 or done or signalled
            eval_now = state.step % eval_every == 0 or done
            keep_now = bool(keep_every) and state.step % keep_every == 0
            ckpt_now = state.step % ckpt_every == 0 or done or signalled or keep_now
            if log_now or eval_now or ckpt_now:
                bad = first_nonfinite(pending, state.step - len(pending) + 1, names)
                pending.clear()
                if bad is None and not state.params_finite():
                    bad = state.step, "non-finite weights"
                if parallel.any_rank(bad is not None):
                    bad = bad or (state.step, "on another rank")
                    status, steps_done_at = "diverged", bad[0]
                    last = checkpoints.last
                    kept = (f"kept the last good checkpoint {last}" if last.exists()
                            else "no checkpoint had been saved yet")
                    note = f"diverged at step {bad[0]} ({bad[1]}); {kept}"
                    break
            if log_now:
                values = dict(zip(names, torch.stack(losses).float().tolist()))
                rate = timer.rate(state.step)
                log.scalars(state.step, {**values, "perf/steps_per_sec": rate,
                                         "perf/lr": plans[0].optimizer.param_groups[0]["lr"]})
                log.progress(state.step, values, rate)
            if eval_now and ranks.main:
                while len(pending_evaluations) > 1:  # the background thread is behind: wait
                    metrics = log_evaluation(*pending_evaluations.popleft())
                pending_evaluations.append(
                    (state.step, evaluator.submit(state.sampler, state.nets, state.step),
                     checkpoints.snapshot()))
            while pending_evaluations and pending_evaluations[0][1].done():
                metrics = log_evaluation(*pending_evaluations.popleft())
            if ckpt_now:
                checkpoints.save(keep_step=keep_now)
            if signalled:
                status = "interrupted"
                name = (signal.Signals(stopper.signal).name if stopper.signal is not None
                        else "a signal to another rank")
                note = f"stopped by {name} at step {state.step}; resume with resume={run_dir}"
                break

        while pending_evaluations:  # every evaluation submitted is logged, also when stopped
            metrics = log_evaluation(*pending_evaluations.popleft())
    if evaluator is not None:
        evaluator.close()
    loop_seconds = time.perf_counter() - loop_start
    steps_done = state.step - start_step
    summary = {
        "status": status,
        "steps": steps_done_at if steps_done_at is not None else state.step,
        "wall_seconds": round(time.time() - started, 3),
        "steps_per_second": round(steps_done / max(loop_seconds, 1e-9), 3),
        "metrics": metrics,
        "model": cfg.model.name,
        "dataset": cfg.dataset.name,
        "seed": cfg.seed,
        "device": str(device),
        "world_size": ranks.world_size,
        "batch_per_rank": batch // ranks.world_size,
        "run_dir": str(run_dir),
        "exit_code": EXIT["completed"],
    }
    if ranks.distributed:  # DDP keeps the replicas equal; say so, and catch it if not
        sums = torch.stack([p.detach().double().sum().cpu() for p in state.nets.parameters()])
        summary["ranks_in_sync"] = parallel.same_on_all_ranks(sums)
    if checkpoints.best_step is not None:
        summary["best"] = {"metric": checkpoints.keep_best[0], "value": checkpoints.best_value,
                           "step": checkpoints.best_step}
    if status == "diverged":
        summary["exit_code"] = EXIT["diverged"]
    if status == "interrupted":
        summary["exit_code"] = EXIT.get(signal.Signals(stopper.signal).name, 143) \
            if stopper.signal is not None else EXIT["SIGTERM"]
    if note:
        summary["message"] = note
    if ranks.main:
        log.hparams(hparams_of(cfg, overrides), metrics)
        finish(log, summary, evaluator.modes_total, run_dir)
    return summary


# ---------------------------------------------------------------------------- resume

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


def check_resume(cfg: DictConfig) -> None:
    """Whether ``cfg.resume`` fits ``cfg`` (networks, optimisers, scalers), tried on the CPU
    before anything is written: a refused resume leaves the run folder as it was."""
    from igm_cli.build import build_state

    checked = check_config(cfg)
    state = build_state(cfg, checked, checked.data_shape, torch.device("cpu"))
    restore(state, cfg, warn=lambda _: None)


def restore(state, cfg: DictConfig, warn=print) -> None:
    """Load ``cfg.resume`` into ``state``; a checkpoint that does not fit (another width,
    data shape, optimiser) is a one-line IgmError."""
    checkpoint = load_resume(cfg)
    try:
        state.load_state_dict(checkpoint, warn=warn if parallel.RANKS.main else lambda _: None)
    except (KeyError, RuntimeError, ValueError, TypeError, IndexError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise IgmError(f"checkpoint '{cfg.resume}' does not fit this configuration ({first})") \
            from None
