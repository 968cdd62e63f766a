"""Where igm's training loop makes the host wait for the GPU: runs `igm train` in this process
with PyTorch's sync debug mode on for a window of steps, and counts each synchronising call by
the igm source line that made it.

On the first GPU run (README, "Speed") igm's toy WGAN-GP step took 1.4x the hand-written loop's,
although it launches fewer kernels (on the CPU the profiler counts 1094 top-level aten ops per
generator step for igm against 1660); a host sync per critic step would explain it. This script
says which line, if any. Default run: bench_toy.py's WGAN-GP row (the authors' toy recipe).

    python scripts/sync_audit.py                      # on a GPU
    python scripts/sync_audit.py model=gan dataset=grid25 --json syncs.json
    python scripts/sync_audit.py --device cpu         # CPU: the loop runs, nothing is counted

Prints one line per call site (syncs per generator step) and writes them to --json.
"""

from __future__ import annotations

import argparse
import collections
import json
import sys
import tempfile
import traceback
import warnings
from pathlib import Path

import torch
from bench_toy import QUIET, ROWS  # scripts/bench_toy.py

START, WINDOW = 20, 50  # generator steps before the window (warm-up), and in it


def call_site(stack: list[traceback.FrameSummary]) -> str:
    """The innermost igm frame of a stack ("igm_cli/x.py:12 code"), else the innermost frame."""
    ours = [f for f in stack if "igm_cli" in Path(f.filename).parts]
    frame = (ours or stack)[-1]
    parts = Path(frame.filename).parts
    name = "/".join(parts[parts.index("igm_cli"):]) if "igm_cli" in parts else frame.filename
    return f"{name}:{frame.lineno} {(frame.line or '').strip()}"


def audit(overrides: list[str], device: str) -> dict:
    """{call site: syncs per generator step} over WINDOW steps after START."""
    import igm_cli.trainer as trainer
    from igm_cli.cli import main as igm_main

    counts: collections.Counter = collections.Counter()
    window = {"steps": 0, "open": False}
    original = trainer.train_step
    cuda = device.startswith("cuda")

    def audited(*args, **kwargs):
        step = window["steps"]
        window["steps"] += 1
        if step in (START, START + WINDOW):
            window["open"] = step == START
            if cuda:
                torch.cuda.set_sync_debug_mode("warn" if window["open"] else "default")
        return original(*args, **kwargs)

    def record(message, category, filename, lineno, file=None, line=None):
        if window["open"] and "synchroniz" in str(message):
            counts[call_site(traceback.extract_stack()[:-1])] += 1

    trainer.train_step = audited
    try:
        with warnings.catch_warnings():  # restores showwarning and the filters on the way out
            warnings.simplefilter("always")
            warnings.showwarning = record
            with tempfile.TemporaryDirectory() as run_dir:
                sys.argv = ["igm", "train", *overrides, *QUIET, f"device={device}",
                            f"train.steps={START + WINDOW + 1}", f"hydra.run.dir={run_dir}"]
                try:
                    igm_main()
                except SystemExit as e:
                    if e.code not in (0, None):
                        raise
    finally:
        trainer.train_step = original
    return {site: n / WINDOW for site, n in counts.most_common()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("overrides", nargs="*", help="igm overrides (default: bench_toy's "
                        "WGAN-GP row)")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--json", type=Path, help="also write {call site: syncs per step} here")
    args = parser.parse_args()
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        sys.exit("sync_audit: no CUDA here; --device cpu runs the loop without counting")
    syncs = audit(args.overrides or ROWS["wgan_gp"].igm, args.device)
    total = sum(syncs.values())
    print(f"host syncs per generator step, steps {START}-{START + WINDOW}: {total:g}")
    for site, per_step in syncs.items():
        print(f"  {per_step:6.2f}  {site}")
    if args.json:
        args.json.write_text(json.dumps(syncs, indent=1))


if __name__ == "__main__":
    main()
