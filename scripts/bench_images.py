"""Training throughput on images for each speed switch: `train.amp`, `train.compile`,
`train.channels_last`, on the device at hand.

Each configuration is one `igm train` on CIFAR-sized fake data (3 x 32 x 32, `dataset=fake`)
with the chosen model and arch; the rate is the steady one, steps per second over the last
`--measure` steps (TensorBoard's perf/steps_per_sec, logged every `--measure` steps), so
compilation and warm-up are left out. Evaluation is off (no image metrics, one grid at the end).

    python scripts/bench_images.py                       # GPU: off, bf16, fp16, compile, all
    python scripts/bench_images.py --device cpu --steps 60 --measure 30 --configs off,bf16
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CONFIGS = {  # name: overrides
    "off": ["train.amp=off", "train.compile=false", "train.channels_last=false"],
    "channels_last": ["train.amp=off", "train.compile=false", "train.channels_last=true"],
    "bf16": ["train.amp=bf16", "train.compile=false", "train.channels_last=false"],
    "fp16": ["train.amp=fp16", "train.compile=false", "train.channels_last=false"],
    "compile": ["train.amp=off", "train.compile=true", "train.channels_last=false"],
    "bf16+compile+channels_last": ["train.amp=bf16", "train.compile=true",
                                   "train.channels_last=true"],
}


def steady_rate(run_dir: Path) -> float:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})
    events.Reload()
    return events.Scalars("perf/steps_per_sec")[-1].value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--model", default="wgan_gp")
    parser.add_argument("--arch", default="dcgan")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--measure", type=int, default=100, help="steps of the steady interval")
    parser.add_argument("--configs", help=f"comma-separated, from: {', '.join(CONFIGS)}")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    names = args.configs.split(",") if args.configs else (
        list(CONFIGS) if args.device.startswith("cuda") else ["off", "channels_last", "bf16"])
    igm = shutil.which("igm")
    base = [igm] if igm else [sys.executable, "-m", "igm_cli"]
    results = []
    for name in names:
        with tempfile.TemporaryDirectory() as tmp:
            cmd = [*base, "train", f"model={args.model}", f"arch={args.arch}", "dataset=fake",
                   f"device={args.device}", f"train.steps={args.steps}",
                   f"train.batch_size={args.batch}", f"train.log_every={args.measure}",
                   f"eval.every={args.steps}", "eval.metrics=[]", "eval.grid=16",
                   f"ckpt.every={args.steps}", "train.threads=2", *CONFIGS[name],
                   f"hydra.run.dir={tmp}"]
            started = time.time()
            done = subprocess.run(cmd, capture_output=True, text=True)
            wall = time.time() - started
            if done.returncode != 0:
                lines = [ln for ln in done.stderr.strip().splitlines()
                         if ln.strip() and "HYDRA_FULL_ERROR" not in ln] or ["?"]
                error = lines[-1]
                results.append({"config": name, "error": error})
                print(f"{name:28s} failed: {error}", flush=True)
                continue
            rate = steady_rate(Path(tmp))
            results.append({"config": name, "steps_per_sec": rate, "wall_s": wall})
            print(f"{name:28s} {rate:8.2f} steps/s   (whole run {wall:.0f} s)", flush=True)
    print(f"\n{args.model} + {args.arch}, batch {args.batch}, fake 3x32x32, device {args.device}; "
          f"command: python scripts/bench_images.py {' '.join(sys.argv[1:])}")
    print("| switch | steps/s | speed-up |\n|---|---|---|")
    baseline = next((r["steps_per_sec"] for r in results
                     if r["config"] == "off" and "steps_per_sec" in r), None)
    for r in results:
        if "steps_per_sec" in r:
            ratio = f"{r['steps_per_sec'] / baseline:.2f}x" if baseline else "–"
            print(f"| {r['config']} | {r['steps_per_sec']:.2f} | {ratio} |")
        else:
            print(f"| {r['config']} | failed: {r['error']} | |")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
