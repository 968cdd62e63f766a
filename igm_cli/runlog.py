"""Everything a run writes: TensorBoard events, metrics.jsonl, summary.json, console lines.

One object, so there is one place that logs; only the main process (rank 0) writes files.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from tqdm import tqdm


def is_main_process() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


def write_json_atomic(data: Any, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(tmp, path)


class RunLog:
    def __init__(self, run_dir: Path, total_steps: int, start_step: int, print_every: int):
        self.run_dir = run_dir
        self.enabled = is_main_process()
        self.print_every = print_every
        self.total_steps = total_steps
        self.writer = None
        self.bar = None
        if not self.enabled:
            return
        from torch.utils.tensorboard import SummaryWriter

        run_dir.mkdir(parents=True, exist_ok=True)
        # On resume, purge_step hides events logged after the checkpoint by the first attempt.
        self.writer = SummaryWriter(str(run_dir), purge_step=start_step or None)
        self.metrics_file = run_dir / "metrics.jsonl"
        if start_step:
            self._truncate_metrics(after=start_step)
        if sys.stdout.isatty():
            self.bar = tqdm(total=total_steps, initial=start_step, unit="step", dynamic_ncols=True)

    def _truncate_metrics(self, after: int) -> None:
        """Drop evaluations from steps the resumed run will redo (they may differ)."""
        if not self.metrics_file.exists():
            return
        lines = self.metrics_file.read_text().splitlines()
        kept = [line for line in lines if line.strip() and json.loads(line)["step"] <= after]
        if len(kept) != len(lines):
            tmp = self.metrics_file.with_name(".metrics.jsonl.tmp")
            tmp.write_text("".join(line + "\n" for line in kept))
            os.replace(tmp, self.metrics_file)

    def scalars(self, step: int, values: dict[str, float]) -> None:
        if self.writer is not None:
            for tag, value in values.items():
                self.writer.add_scalar(tag, value, step)

    def progress(self, step: int, values: dict[str, float], steps_per_sec: float) -> None:
        """Advance the bar (terminal) or print a plain line every ``print_every`` steps."""
        if not self.enabled:
            return
        shown = {k.split("/")[-1]: f"{v:.3g}" for k, v in values.items()}
        if self.bar is not None:
            self.bar.n = step
            self.bar.set_postfix(shown, refresh=True)
        elif step % self.print_every == 0 or step == self.total_steps:
            losses = "  ".join(f"{k} {v}" for k, v in shown.items())
            print(f"step {step}/{self.total_steps}  {losses}  {steps_per_sec:.1f} steps/s",
                  flush=True)

    def evaluation(self, step: int, metrics: dict[str, float], figure=None,
                   images: dict | None = None, figures: dict | None = None) -> None:
        """Metrics to TensorBoard (metrics/NAME), metrics.jsonl and the console; ``figure``
        (a matplotlib figure) and ``images`` ({tag: [3, H, W] grid in [0, 1]}) to TensorBoard."""
        if not self.enabled:
            return
        self.scalars(step, {f"metrics/{k}": v for k, v in metrics.items()})
        if figure is not None:
            self.writer.add_figure("samples", figure, step, close=True)
        for tag, grid in (images or {}).items():
            self.writer.add_image(tag, grid, step)
        for tag, fig in (figures or {}).items():
            self.writer.add_figure(tag, fig, step, close=True)
        with open(self.metrics_file, "a") as f:
            f.write(json.dumps({"step": step, **metrics}) + "\n")
        text = "  ".join(f"{k} {v:.4g}" for k, v in metrics.items())
        self.message(f"eval step {step}: {text}")

    def message(self, text: str) -> None:
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.write(text)
        else:
            print(text, flush=True)

    def summary(self, summary: dict[str, Any]) -> None:
        if self.enabled:
            write_json_atomic(summary, self.run_dir / "summary.json")

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        if self.writer is not None:
            self.writer.close()


class StepTimer:
    """Steps per second over the interval since the last call."""

    def __init__(self, step: int):
        self.step, self.time = step, time.perf_counter()

    def rate(self, step: int) -> float:
        now = time.perf_counter()
        rate = (step - self.step) / max(now - self.time, 1e-9)
        self.step, self.time = step, now
        return rate
