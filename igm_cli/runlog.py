"""Everything a run writes: TensorBoard events, metrics.jsonl, summary.json, train.log and the
console. One object, so there is one place that logs; only rank 0 writes (other ranks' RunLog
is silent).

The console and ``train.log`` get the same lines: the run folder at the start, progress lines,
each evaluation, warnings, and the summary block at the end (a terminal also gets a tqdm bar,
which the log file does not).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from tqdm import tqdm


def is_main_process() -> bool:
    """Rank 0 (or the only process): the one that writes files."""
    from igm_cli.parallel import RANKS

    return RANKS.main


def write_json_atomic(data: Any, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(tmp, path)


def read_jsonl(path: Path) -> list[dict]:
    """The JSON objects of a .jsonl file, skipping lines that do not parse (a line torn by a
    kill or a full disk)."""
    records = []
    if path.exists():
        for line in path.read_text().splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(record, dict):
                records.append(record)
    return records


class RunLog:
    def __init__(self, run_dir: Path, total_steps: int, start_step: int, print_every: int,
                 main: bool = True):
        self.run_dir = run_dir
        self.enabled = main
        self.print_every = print_every
        self.total_steps = total_steps
        self.writer = None
        self.bar = None
        self.log_file = None
        if not self.enabled:
            return
        from torch.utils.tensorboard import SummaryWriter

        run_dir.mkdir(parents=True, exist_ok=True)
        self.log_file = open(run_dir / "train.log", "a", buffering=1)  # line-buffered
        # On resume, purge_step hides events logged after the checkpoint by the first attempt.
        self.writer = SummaryWriter(str(run_dir), purge_step=start_step or None)
        self.metrics_file = run_dir / "metrics.jsonl"
        if start_step:
            self._truncate_metrics(after=start_step)
        if sys.stdout.isatty():
            self.bar = tqdm(total=total_steps, initial=start_step, unit="step", dynamic_ncols=True)

    def _truncate_metrics(self, after: int) -> None:
        """Drop evaluations from steps the resumed run will redo (they may differ), and lines
        a kill tore."""
        if not self.metrics_file.exists():
            return
        kept = [r for r in read_jsonl(self.metrics_file) if r.get("step", 0) <= after]
        tmp = self.metrics_file.with_name(f".metrics.jsonl.tmp-{os.getpid()}")
        tmp.write_text("".join(json.dumps(r) + "\n" for r in kept))
        os.replace(tmp, self.metrics_file)

    def message(self, text: str, console: bool = True) -> None:
        """A line for the console and train.log."""
        if not self.enabled:
            return
        if console:
            if self.bar is not None:
                self.bar.write(text)
            else:
                print(text, flush=True)
        if self.log_file is not None:
            self.log_file.write(text + "\n")

    def scalars(self, step: int, values: dict[str, float]) -> None:
        if self.writer is not None:
            for tag, value in values.items():
                self.writer.add_scalar(tag, value, step)

    def progress(self, step: int, values: dict[str, float], steps_per_sec: float) -> None:
        """Advance the bar (terminal) and write a plain line every ``print_every`` steps (to
        the console when it is not a terminal, to train.log always)."""
        if not self.enabled:
            return
        shown = {k.split("/")[-1]: f"{v:.3g}" for k, v in values.items()}
        if self.bar is not None:
            self.bar.n = step
            self.bar.set_postfix(shown, refresh=True)
        if step % self.print_every == 0 or step == self.total_steps:
            losses = "  ".join(f"{k} {v}" for k, v in shown.items())
            self.message(f"step {step}/{self.total_steps}  {losses}  {steps_per_sec:.1f} steps/s",
                         console=self.bar is None)

    def evaluation(self, step: int, evaluation) -> None:
        """An Evaluation's metrics to TensorBoard (metrics/NAME), metrics.jsonl and the console;
        its images ({tag: [3, H, W], float in [0, 1] or uint8}) to TensorBoard."""
        if not self.enabled:
            return
        metrics = evaluation.metrics
        self.scalars(step, {f"metrics/{k}": v for k, v in metrics.items()})
        for tag, image in evaluation.images.items():
            self.writer.add_image(tag, image, step)
        with open(self.metrics_file, "a") as f:
            f.write(json.dumps({"step": step, **metrics}) + "\n")
        text = "  ".join(f"{k} {v:.4g}" for k, v in metrics.items())
        self.message(f"eval step {step}: {text}")

    def text(self, tag: str, markdown: str) -> None:
        if self.writer is not None:
            self.writer.add_text(tag, markdown, 0)

    def hparams(self, hparams: dict[str, Any], metrics: dict[str, float]) -> None:
        """The run's hyperparameters and final metrics for TensorBoard's HPARAMS tab (the
        metrics point at the ``metrics/NAME`` scalars already logged)."""
        if self.writer is None:
            return
        from torch.utils.tensorboard.summary import hparams as hparams_summary

        values = {k: v if isinstance(v, (int, float, str, bool)) else str(v)
                  for k, v in hparams.items()}
        tags = {f"metrics/{k}": v for k, v in metrics.items()}
        for event in hparams_summary(values, tags):
            self.writer.file_writer.add_summary(event)

    def summary(self, summary: dict[str, Any]) -> None:
        if self.enabled:
            write_json_atomic(summary, self.run_dir / "summary.json")

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        if self.writer is not None:
            self.writer.close()
            self.writer = None
        if self.log_file is not None:
            self.log_file.close()
            self.log_file = None


class StepTimer:
    """Steps per second over the interval since the last call."""

    def __init__(self, step: int):
        self.step, self.time = step, time.perf_counter()

    def rate(self, step: int) -> float:
        now = time.perf_counter()
        rate = (step - self.step) / max(now - self.time, 1e-9)
        self.step, self.time = step, now
        return rate


def git_commit(folder: Path) -> str | None:
    """The commit checked out in the git repository holding ``folder`` (with "+dirty" when it
    has uncommitted changes), or None outside a repository."""
    try:
        head = subprocess.run(["git", "-C", str(folder), "rev-parse", "HEAD"], timeout=5,
                              capture_output=True, text=True)
        if head.returncode != 0:
            return None
        dirty = subprocess.run(["git", "-C", str(folder), "status", "--porcelain",
                                "--untracked-files=no"], timeout=5, capture_output=True,
                               text=True).stdout.strip()
        return head.stdout.strip() + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return None


# ---------------------------------------------------------------------------- the run's voice

def announce(log: RunLog, cfg, device, parameters: str, run_dir: Path, start_step: int) -> None:
    """The start of a run: where it writes, what it trains, and its config in TensorBoard."""
    import platform

    import torch
    from omegaconf import OmegaConf

    from igm_cli import __version__
    from igm_cli.parallel import RANKS as ranks

    what = (f"{cfg.model.name} on {cfg.dataset.name}, seed {cfg.seed}, {device}, "
            f"{cfg.train.steps} steps of batch {cfg.train.batch_size}")
    if ranks.distributed:
        what += f" ({ranks.world_size} processes x {cfg.train.batch_size // ranks.world_size})"
    log.message(f"igm: run folder {run_dir}")
    log.message(f"igm: training {what}; {parameters} parameters")
    if start_step:
        log.message(f"igm: resumed from step {start_step}")
    recipe_steps = cfg.train.get("recipe_steps")
    if recipe_steps and cfg.train.steps < recipe_steps:
        log.message(f"igm: warning: train.steps={cfg.train.steps} is shorter than the "
                    f"{recipe_steps} steps this recipe was tuned for (the learning rate decays "
                    f"to 0 at train.steps): expect fewer modes and lower quality")
    versions = {"igm": __version__, "torch": torch.__version__,
                "python": platform.python_version(), "igm source": git_commit(Path(__file__)
                                                                               .parent),
                "working folder": git_commit(Path.cwd())}
    log.text("config", "```yaml\n" + OmegaConf.to_yaml(cfg, resolve=True) + "```")
    log.text("versions", "\n".join(f"- {k}: {v}" for k, v in versions.items() if v))


def hparams_of(cfg, overrides: list[str]) -> dict:
    """The run's hyperparameters for TensorBoard's HPARAMS tab: model, data, arch, seed, and
    every key set on the command line (what a sweep varies)."""
    from omegaconf import OmegaConf

    values = {"model": cfg.model.name, "dataset": cfg.dataset.name, "arch": cfg.arch.name,
              "seed": cfg.seed}
    for override in overrides:
        key = override.partition("=")[0].lstrip("+~")
        if key.startswith("hydra") or key == "resume":
            continue
        value = OmegaConf.select(cfg, key, default=None)
        if value is not None and not OmegaConf.is_config(value):
            values[key] = value
        elif OmegaConf.is_config(value) and "name" in value:  # a group choice: model=wgan
            values[key] = value.name
    return values


def finish(log: RunLog, summary: dict, modes_total: int | None, run_dir: Path) -> None:
    """The summary block: status, steps, time, final metrics with their scale and direction,
    the run folder, and how to look at it."""
    from igm_cli.metrics import better, headline

    rate = summary["steps_per_second"]
    log.message(f"igm: {summary['status']} at step {summary['steps']} in "
                f"{summary['wall_seconds']:.1f} s ({rate:.1f} steps/s)")
    metrics = summary["metrics"]
    if metrics:
        total = modes_total
        shown = []
        for name, value in metrics.items():
            direction = better(name)
            text = f"{int(value)}/{total}" if name == "modes" and total else f"{value:.4g}"
            arrow = {"min": " (lower is better)", "max": " (higher is better)"}.get(direction, "")
            shown.append(f"{name} {text}{arrow}")
        log.message("  final metrics: " + "; ".join(shown))
        log.message(f"  in short: {headline(metrics, total)}")
    log.message(f"  run folder: {run_dir}")
    log.message(f"  tensorboard --logdir {run_dir}")
    log.message(f"  igm sample run={run_dir} n=1000 out=samples.png")
