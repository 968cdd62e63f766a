"""Steps per second of `igm train` with 1 and N processes (DistributedDataParallel), for the
dcgan and resnet archs at 32 px on FakeData, with the same global batch.

Each configuration runs as a whole process (through `igm train train.devices=N`) at two step
counts; the time per step is (t(long) - t(short)) / (long - short), so start-up, the process
group's rendezvous and the final evaluation cancel. On CPUs the ranks use gloo and one thread
each; on GPUs (`--device cuda`) nccl and one GPU each.

    python scripts/bench_ddp.py                       # CPU: 1 and 2 processes
    python scripts/bench_ddp.py --device cuda --ranks 1,2,4 --steps 50,150
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import tempfile
import time
from pathlib import Path

from igm_command import igm_command  # scripts/igm_command.py


def run(arch: str, ranks: int, steps: int, device: str, batch: int, timeout: float) -> float:
    """Wall seconds of one whole `igm train` process tree."""
    with tempfile.TemporaryDirectory() as folder:
        command = [*igm_command(), "train", "model=gan", f"arch={arch}", "dataset=fake",
                   "dataset.size=512", "dataset.heldout=64", f"train.batch_size={batch}",
                   f"train.steps={steps}", f"train.devices={ranks}", f"device={device}",
                   "train.threads=1", "eval.every=1000000", "eval.metrics=[]", "eval.grid=4",
                   "eval.n_samples=16", "ckpt.every=1000000", "train.log_every=1000000",
                   f"hydra.run.dir={folder}/run"]
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        started = time.perf_counter()
        result = subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env)
        seconds = time.perf_counter() - started
        if result.returncode != 0:
            raise RuntimeError(f"{' '.join(command)} failed:\n{result.stderr[-2000:]}")
        summary = json.loads(Path(folder, "run", "summary.json").read_text())
        assert summary["world_size"] == ranks and summary["status"] == "completed", summary
        return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--archs", default="dcgan,resnet")
    parser.add_argument("--ranks", default="1,2")
    parser.add_argument("--steps", default="6,18", help="short,long step counts")
    parser.add_argument("--batch", type=int, default=32, help="the global batch")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--timeout", type=float, default=900)
    args = parser.parse_args()
    short, long = (int(s) for s in args.steps.split(","))
    rows = []
    for arch in args.archs.split(","):
        for ranks in (int(r) for r in args.ranks.split(",")):
            per_step = []
            for _ in range(args.repeats):
                t_short = run(arch, ranks, short, args.device, args.batch, args.timeout)
                t_long = run(arch, ranks, long, args.device, args.batch, args.timeout)
                per_step.append((t_long - t_short) / (long - short))
            best = min(per_step)
            rows.append((arch, ranks, best))
            print(f"{arch} x {ranks}: {1 / best:.3f} steps/s ({best:.3f} s/step)", flush=True)
    print(f"\n{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"device {args.device}, global batch {args.batch}, 32 px, model=gan; "
          f"best of {args.repeats} marginal times ((t({long}) - t({short})) / {long - short})\n")
    print("| arch | processes | steps/s | speed-up |")
    print("|---|---|---|---|")
    for arch, ranks, seconds in rows:
        one = next(s for a, r, s in rows if a == arch and r == rows[0][1])
        print(f"| {arch} | {ranks} | {1 / seconds:.3f} | {one / seconds:.2f}x |")


if __name__ == "__main__":
    main()
