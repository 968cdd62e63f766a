"""Training throughput on images for each speed switch: `train.amp`, `train.compile`,
`train.channels_last`, on the device at hand.

Each configuration is one `igm train` on fake data (3 x 32 x 32 by default, `dataset=fake`,
`--resolution 64` for 64 px) with the chosen model and arch; the rate is the steady one, steps
per second over the last `--measure` steps (TensorBoard's perf/steps_per_sec, logged every
`--measure` steps; make `--steps` a multiple of it), so compilation and warm-up are left out.
Evaluation is off (no image metrics, one grid at the end). A configuration that fails or runs
past `--timeout` is reported as such, and the others still run (exit status 1 at the end).

    python scripts/bench_images.py                       # GPU: every switch, dcgan
    python scripts/bench_images.py --arch resnet --steps 120 --measure 40 --timeout 60
    python scripts/bench_images.py --device cpu --steps 60 --measure 30 --configs off,bf16
    python scripts/bench_images.py --device cpu --steps 2 --measure 1 --batch 4 --configs off
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from igm_command import igm_command  # scripts/igm_command.py

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




def last_error(stderr: str) -> str:
    lines = [ln for ln in stderr.strip().splitlines()
             if ln.strip() and "HYDRA_FULL_ERROR" not in ln] or ["?"]
    return lines[-1].strip()[:200]


def markdown(results: list[dict], title: str) -> str:
    lines = [title, "", "| switch | steps/s | speed-up |", "|---|---|---|"]
    baseline = next((r["steps_per_sec"] for r in results
                     if r["config"] == "off" and "steps_per_sec" in r), None)
    for r in results:
        if "steps_per_sec" in r:
            ratio = f"{r['steps_per_sec'] / baseline:.2f}x" if baseline else "–"
            lines.append(f"| {r['config']} | {r['steps_per_sec']:.2f} | {ratio} |")
        else:
            lines.append(f"| {r['config']} | failed: {r['error']} | |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--model", default="wgan_gp")
    parser.add_argument("--arch", default="dcgan", help="dcgan | resnet")
    parser.add_argument("--resolution", type=int, default=32, help="32 | 64")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--measure", type=int, default=100, help="steps of the steady interval")
    parser.add_argument("--configs", help=f"comma-separated, from: {', '.join(CONFIGS)}")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads of each run")
    parser.add_argument("--timeout", type=float, default=None, help="seconds per configuration")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--markdown", type=Path, help="also write the table here")
    args = parser.parse_args()
    names = args.configs.split(",") if args.configs else (
        list(CONFIGS) if args.device.startswith("cuda") else ["off", "channels_last", "bf16"])
    unknown = [n for n in names if n not in CONFIGS]
    if unknown:
        sys.exit(f"bench_images: unknown config(s) {', '.join(unknown)}; "
                 f"choose from {', '.join(CONFIGS)}")
    base = igm_command()
    results = []
    for name in names:
        with tempfile.TemporaryDirectory() as tmp:
            cmd = [*base, "train", f"model={args.model}", f"arch={args.arch}", "dataset=fake",
                   f"dataset.resolution={args.resolution}",
                   f"device={args.device}", f"train.steps={args.steps}",
                   f"train.batch_size={args.batch}", f"train.log_every={args.measure}",
                   f"eval.every={args.steps}", "eval.metrics=[]", "eval.grid=16",
                   f"ckpt.every={args.steps}", f"train.threads={args.threads}",
                   *CONFIGS[name], f"hydra.run.dir={tmp}"]
            started = time.time()
            try:
                done = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout)
                error = last_error(done.stderr) if done.returncode != 0 else None
            except subprocess.TimeoutExpired:
                error = f"timed out after {args.timeout:.0f} s"
            wall = time.time() - started
            if error:
                results.append({"config": name, "error": error})
                print(f"{name:28s} failed: {error}", flush=True)
                continue
            rate = steady_rate(Path(tmp))
            results.append({"config": name, "steps_per_sec": rate, "wall_s": wall})
            print(f"{name:28s} {rate:8.2f} steps/s   (whole run {wall:.0f} s)", flush=True)
    title = (f"{args.model} + {args.arch}, batch {args.batch}, fake 3x{args.resolution}x"
             f"{args.resolution}, device {args.device}; command: python scripts/bench_images.py "
             f"{' '.join(sys.argv[1:])}")
    table = markdown(results, title)
    print("\n" + table)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    if args.markdown:
        args.markdown.write_text(table)
    sys.exit(1 if any("error" in r for r in results) else 0)


if __name__ == "__main__":
    main()
