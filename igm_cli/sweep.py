"""Sweeps (`igm train -m ...`): one report of every job, whatever launcher ran them.

`SweepSummary` is a Hydra callback (configs/train.yaml, `hydra.callbacks`):
  - at the start of a multirun it prints the sweep folder and the number of jobs;
  - in each job's own process (the main one, a joblib worker, a SLURM node) it clears a
    summary.json left by an earlier attempt, and writes `status: failed` with the error when the
    job raised, so that every job folder says how its job ended;
  - at the end it reads every job folder's summary.json, prints one table of the final metrics,
    writes sweep_summary.json and sweep_summary.md into the sweep folder, and names each job
    that did not complete.
The exit code of the command comes from those files (`run_reporting`), so a job that failed in
another process still makes `igm train -m` exit non-zero.

`job_dirname` names sweep job folders (the `igm.job_dirname` resolver in train.yaml).
"""

from __future__ import annotations

import json
import math
import re
import sys
from pathlib import Path
from typing import Any, Callable

from hydra.core.utils import JobReturn, JobStatus
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from igm_cli.runlog import write_json_atomic

EXIT_OK, EXIT_FAILED, EXIT_DIVERGED, EXIT_INTERRUPTED = 0, 2, 3, 130  # igm_cli.cli's codes
NO_SUMMARY = "no summary: the job crashed before training"

# The multirun of this process: its folder once it starts, its exit code once reported.
_sweep: dict[str, Any] = {}


# ---------------------------------------------------------------------------- job folder names

_FLOAT = re.compile(r"\d+\.\d+(?:e[-+]?\d+)?|\d+e[-+]?\d+")
_UNSAFE = re.compile(r"[^\w.,=+\-\[\]]")  # what a file name may hold on any system and shell


def job_dirname(num: int, seed: Any, overrides: str) -> str:
    """`3_model.lr=0.0055,seed=0`: the job number, the job's overrides (Hydra's
    hydra.job.override_dirname, which leaves out the keys in its exclude_keys), then the seed,
    also when it is not swept. Long floats (Optuna's) keep 4 significant digits; characters
    unsafe in a file name become `_`."""
    text = _UNSAFE.sub("_", shorten_floats(str(overrides)))
    if len(text) > 180:  # file names stop at 255 bytes
        text = text[:180] + "..."
    return f"{num}_{text + ',' if text else ''}seed={seed}"


OmegaConf.register_new_resolver("igm.job_dirname", job_dirname, replace=True)


# ---------------------------------------------------------------------------- the callback

class SweepSummary(Callback):
    """Reports a multirun: see the module's docstring."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(str(config.hydra.sweep.dir))
        _sweep.clear()
        _sweep["dir"] = sweep_dir
        count = count_jobs(config)
        print(f"sweep: {sweep_dir}/" + (f"  ({count} jobs)" if count is not None else ""),
              flush=True)

    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        if config.hydra.mode == RunMode.MULTIRUN:  # a requeued or repeated job starts afresh
            (Path(config.hydra.runtime.output_dir) / "summary.json").unlink(missing_ok=True)

    def on_job_end(self, config: DictConfig, job_return: JobReturn, **kwargs: Any) -> None:
        if config.hydra.mode == RunMode.MULTIRUN and job_return.status == JobStatus.FAILED:
            error = job_return._return_value  # the exception; .return_value would raise it
            lines = str(error).strip().splitlines()
            message = type(error).__name__ + (f": {lines[0]}" if lines else "")
            write_failed_summary(Path(config.hydra.runtime.output_dir), config, message)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        _sweep["code"] = report(Path(str(config.hydra.sweep.dir)))


def write_failed_summary(run_dir: Path, cfg: DictConfig, message: str) -> None:
    """summary.json of a job that ended in an error, unless the job wrote its own."""
    summary_file = run_dir / "summary.json"
    if summary_file.exists() and read_summary(summary_file).get("status") == "failed":
        return
    summary = {"status": "failed", "message": message, "metrics": {},
               "model": OmegaConf.select(cfg, "model.name", default=None),
               "dataset": OmegaConf.select(cfg, "dataset.name", default=None),
               "seed": OmegaConf.select(cfg, "seed", default=None),
               "run_dir": str(run_dir)}
    run_dir.mkdir(parents=True, exist_ok=True)
    write_json_atomic(summary, summary_file)


def count_jobs(config: DictConfig) -> int | None:
    """Jobs the sweeper will launch: the product of the swept values (Hydra's basic sweeper) or
    n_trials (Optuna); None for other sweepers."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    sweeper = config.hydra.sweeper
    target = str(sweeper.get("_target_", ""))
    if target.endswith("OptunaSweeper"):
        return int(sweeper.n_trials)
    if not target.endswith("BasicSweeper"):
        return None
    params = [f"{key}={value}" for key, value in (sweeper.get("params") or {}).items()]
    try:
        overrides = OverridesParser.create().parse_overrides(
            params + list(config.hydra.overrides.task))
        batches = BasicSweeper.split_arguments(overrides, None)
    except HydraException:  # e.g. glob(), which needs the config loader: count unknown
        return None
    return sum(len(batch) for batch in batches)


# ---------------------------------------------------------------------------- the report

def read_summary(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def collect(sweep_dir: Path) -> list[dict]:
    """One record per job folder (a folder with .hydra/hydra.yaml) under ``sweep_dir``:
    num, dir, overrides, status, metrics, message. A folder without summary.json failed."""
    jobs = []
    for hydra_file in sweep_dir.glob("**/.hydra/hydra.yaml"):
        job_dir = hydra_file.parent.parent
        hydra_cfg = OmegaConf.load(hydra_file).hydra
        summary_file = job_dir / "summary.json"
        summary = read_summary(summary_file) if summary_file.exists() else None
        if summary is None:
            status, message, metrics = "failed", NO_SUMMARY, {}
        else:
            status = summary.get("status", "failed")
            message = summary.get("message")
            metrics = headline_metrics(summary)
        job = {"num": int(hydra_cfg.job.num), "dir": str(job_dir.relative_to(sweep_dir)),
               "overrides": list(hydra_cfg.overrides.task), "status": status,
               "metrics": metrics}
        if message:
            job["message"] = message
        jobs.append(job)
    return sorted(jobs, key=lambda job: job["num"])


def headline_metrics(summary: dict) -> dict:
    """The final evaluation (igm train), or the estimate beside the exact value (igm estimate)."""
    if "metrics" in summary:
        return dict(summary["metrics"] or {})
    return {key: summary[key] for key in ("estimate", "exact", "abs_error", "critic_error")
            if key in summary}


def exit_code(statuses: list[str], hydra_code: int | None = 0) -> int:
    """2 when a job failed, else 3 when one diverged, else 130/143 when one was interrupted;
    a sweep that Hydra stopped for another reason counts as failed."""
    if "failed" in statuses:
        return EXIT_FAILED
    if "diverged" in statuses:
        return EXIT_DIVERGED
    if "interrupted" in statuses:
        return hydra_code if hydra_code in (130, 143) else EXIT_INTERRUPTED
    if hydra_code in (130, 143):
        return hydra_code
    return EXIT_FAILED if hydra_code else EXIT_OK


def report(sweep_dir: Path, hydra_code: int | None = 0) -> int:
    """Print the sweep's table and its failed jobs, write sweep_summary.{json,md}; the exit code."""
    jobs = collect(sweep_dir)
    common, varying = split_overrides(jobs)
    table = markdown_table(jobs, varying)
    if sweep_dir.is_dir():
        write_json_atomic({"sweep_dir": str(sweep_dir.resolve()), "jobs": jobs},
                          sweep_dir / "sweep_summary.json")
        heading = f"Sweep {sweep_dir}" + (f"; every job: {' '.join(common)}" if common else "")
        (sweep_dir / "sweep_summary.md").write_text(f"{heading}\n\n{table}\n")
    statuses = [job["status"] for job in jobs]
    counts = ", ".join(f"{statuses.count(s)} {s}" for s in dict.fromkeys(statuses))
    print(f"\nsweep: {sweep_dir}/  {counts or 'no job folder'}", flush=True)
    if common:
        print(f"every job: {' '.join(common)}")
    if jobs:
        print(table, flush=True)
    for job in jobs:
        if job["status"] != "completed":
            label = " ".join(varying[job["num"]]) or job["dir"]
            print(f"igm: job {job['num']} ({label}) {job['status']}: "
                  f"{job.get('message', 'no message')}", file=sys.stderr, flush=True)
    return exit_code(statuses, hydra_code)


def split_overrides(jobs: list[dict]) -> tuple[list[str], dict[int, list[str]]]:
    """The overrides every job shares, and each job's own (what the sweep varied)."""
    shared = set.intersection(*(set(job["overrides"]) for job in jobs)) if len(jobs) > 1 else set()
    common = [o for o in jobs[0]["overrides"] if o in shared] if jobs else []
    return common, {job["num"]: [o for o in job["overrides"] if o not in shared] for job in jobs}


def markdown_table(jobs: list[dict], varying: dict[int, list[str]]) -> str:
    """job | overrides | status | each metric any job reported; columns padded to line up."""
    names = list(dict.fromkeys(name for job in jobs for name in job["metrics"]))
    rows = [["job", "overrides", "status", *names]]
    for job in jobs:
        rows.append([str(job["num"]), shorten_floats(" ".join(varying[job["num"]])),
                     job["status"], *(format_value(job["metrics"].get(n)) for n in names)])
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["| " + " | ".join(cell.ljust(w) for cell, w in zip(row, widths)) + " |"
             for row in rows]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)


def shorten_floats(text: str) -> str:
    """0.0006724128593467394 -> 0.0006724 (4 significant digits), where that is shorter."""
    return _FLOAT.sub(lambda m: min(m.group(), f"{float(m.group()):.4g}", key=len), text)


def format_value(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}" if math.isfinite(value) else str(value)
    return str(value)


# ---------------------------------------------------------------------------- the exit code

def run_reporting(run: Callable[[], None]) -> int | None:
    """Run a Hydra app; when it ran a multirun, return the exit code its job folders give (None
    for a single run). A job that raised makes Hydra's sweepers stop with a traceback and exit 1
    before on_multirun_end: the sweep is reported then, from the folders that exist."""
    _sweep.clear()
    try:
        run()
    except (SystemExit, KeyboardInterrupt) as exc:
        if "dir" not in _sweep:  # not a multirun, or one that never started
            raise
        if "code" not in _sweep:
            if isinstance(exc, KeyboardInterrupt):  # Ctrl-C while a parallel launcher waited
                hydra_code = EXIT_INTERRUPTED
            else:  # sys.exit(None) is success, sys.exit("text") failure
                hydra_code = exc.code if isinstance(exc.code, int) else int(exc.code is not None)
            _sweep["code"] = report(_sweep["dir"], hydra_code)
        return _sweep["code"]
    if "dir" in _sweep and "code" not in _sweep:  # on_multirun_end raised (a warning only)
        _sweep["code"] = report(_sweep["dir"])
    return _sweep.get("code")
