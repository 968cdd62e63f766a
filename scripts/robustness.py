"""The defaults on data no recipe was tuned for: every model, with its shipped settings, on
shapes without modes given as a user's own points (`dataset=npy`), scored by the exact W1
between 2500 generated points and the run's 2500 evaluation points, beside the data-vs-data
floor (the same W1 between two independent samples of the data, 2500 each: what a perfect
generator would score).

Data sets (written as .npy files, 50 000 points each, into the sweep folder):
  swissroll  igm's 2-D swiss roll (dataset=swissroll's distribution, noise 0.05)
  arcs       a ring of 8 uniform arcs: radius 2, each arc 22.5° wide (half of the gap), angles
             uniform on the arcs, radial noise 0.02; no Gaussian modes to lock onto
  roll3d     a 3-D swiss roll: the 2-D roll in (x, z), height y uniform in [-1, 1], noise 0.05
  shell5d    a shell in 5-D: uniform on the sphere of radius 2, radial noise 0.05

    python scripts/robustness.py                           # all models, seed 0, 2 jobs at once
    python scripts/robustness.py --models gan,wgan_gp --seeds 0,1 --markdown robust.md
    python scripts/robustness.py --collect DIR             # the table of finished sweeps
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import time
from pathlib import Path

import numpy as np
import torch
from igm_command import igm_command  # scripts/igm_command.py

ROOT = Path(__file__).resolve().parent.parent
MODELS = ("gan", "gan_minimax", "fgan", "fgan_ratio", "wgan", "wgan_gp", "ratio_matching",
          "gmmn", "mmd_gan", "alpha_gan")
N_FILE, N_EVAL = 50_000, 2500
DATA_SEED, FLOOR_SEED = 1234, 4321


def swissroll(n: int, gen: torch.Generator) -> torch.Tensor:
    from igm_cli.data.toy import SwissRoll

    return SwissRoll(noise=0.05).sample(n, gen)


def arcs(n: int, gen: torch.Generator, k: int = 8, radius: float = 2.0) -> torch.Tensor:
    width = math.pi / k  # half of the 2π/k between arc starts
    start = 2 * math.pi / k * torch.randint(0, k, (n,), generator=gen)
    angle = start + width * torch.rand(n, generator=gen)
    r = radius + 0.02 * torch.randn(n, generator=gen)
    return torch.stack([r * angle.cos(), r * angle.sin()], dim=1)


def roll3d(n: int, gen: torch.Generator) -> torch.Tensor:
    u = torch.rand(n, generator=gen)
    t = 1.5 * math.pi * (1 + 2 * u)
    height = 2 * torch.rand(n, generator=gen) - 1
    roll = torch.stack([t * t.cos() / 5, height, t * t.sin() / 5], dim=1)
    return roll + 0.05 * torch.randn(n, 3, generator=gen)


def shell5d(n: int, gen: torch.Generator, radius: float = 2.0) -> torch.Tensor:
    direction = torch.randn(n, 5, generator=gen)
    direction = direction / direction.norm(dim=1, keepdim=True)
    return direction * (radius + 0.05 * torch.randn(n, 1, generator=gen))


DATA = {"swissroll": swissroll, "arcs": arcs, "roll3d": roll3d, "shell5d": shell5d}


def write_data(folder: Path) -> dict[str, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name, make in DATA.items():
        path = folder / f"{name}.npy"
        points = make(N_FILE, torch.Generator().manual_seed(DATA_SEED))
        np.save(path, points.numpy().astype(np.float32))
        paths[name] = path
    return paths


def floors(paths: dict[str, Path]) -> dict[str, float]:
    """W1 between a run's evaluation sample (igm's fixed sample of the file) and 2500 fresh
    points of the same distribution: the score of a generator that draws from the data."""
    from igm_cli.data.toy import ArrayData
    from igm_cli.generate import EVAL_SEED
    from igm_cli.metrics.distances import w1

    out = {}
    for name, path in paths.items():
        evaluation = ArrayData(torch.from_numpy(np.load(path))).fixed_sample(N_EVAL, EVAL_SEED)
        fresh = DATA[name](N_EVAL, torch.Generator().manual_seed(FLOOR_SEED))
        out[name] = w1(fresh, evaluation)
    return out


def collect(sweep: Path) -> list[dict]:
    """One row per finished job: model, data set, seed, status, w1, wall seconds."""
    import yaml

    rows = []
    for summary in sorted(sweep.glob("*/*/summary.json")):  # DATA/JOB/summary.json
        job = summary.parent
        config = yaml.safe_load((job / ".hydra" / "config.yaml").read_text())
        result = json.loads(summary.read_text())
        rows.append({"model": config["model"]["name"], "data": Path(config["dataset"]["path"]).stem,
                     "seed": config["seed"], "status": result.get("status"),
                     "w1": result.get("metrics", {}).get("w1"),
                     "wall": result.get("wall_seconds")})
    return rows


def table(rows: list[dict], floor: dict[str, float]) -> str:
    data = [d for d in DATA if any(r["data"] == d for r in rows)]
    models = [m for m in MODELS if any(r["model"] == m for r in rows)]
    lines = ["| model | " + " | ".join(data) + " |", "|---" * (len(data) + 1) + "|",
             "| data-vs-data floor | " + " | ".join(f"{floor[d]:.3f}" for d in data) + " |"]
    for model in models:
        cells = []
        for d in data:
            done = [r for r in rows if r["model"] == model and r["data"] == d]
            values = [r["w1"] for r in done if r["status"] == "completed" and r["w1"] is not None]
            if not values:
                cells.append(", ".join(sorted({str(r["status"]) for r in done})) or "—")
                continue
            mean = statistics.mean(values)
            cells.append(f"{mean:.3f} ({mean / floor[d]:.1f}x)")
        lines.append(f"| `{model}` | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--seeds", default="0")
    parser.add_argument("--data", default=",".join(DATA), help="from: " + ", ".join(DATA))
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--sweep-dir", type=Path,
                        default=ROOT / "outputs/robustness" / time.strftime("%Y-%m-%d_%H-%M-%S"))
    parser.add_argument("--collect", type=Path, help="only report a finished sweep folder")
    parser.add_argument("--markdown", type=Path, help="also write the table here")
    parser.add_argument("--extra", nargs="*", default=[], help="more overrides for every job")
    args = parser.parse_args()

    sweep = (args.collect or args.sweep_dir).resolve()
    paths = write_data(sweep / "data")  # the same files every time (fixed seed)
    if args.collect is None:
        for name in args.data.split(","):  # one sweep per data set: a path is not swept
            command = ["train", "-m", f"model={args.models}", "dataset=npy",
                       f"dataset.path={paths[name]}", f"seed={args.seeds}",
                       "hydra/launcher=parallel", f"hydra.launcher.n_jobs={args.jobs}",
                       f"hydra.sweep.dir={sweep / name}", *args.extra]
            print("igm " + " ".join(command), flush=True)
            subprocess.run([*igm_command(), *command], cwd=ROOT)  # failures show in the table
    text = table(collect(sweep), floors(paths))
    print(text)
    if args.markdown:
        args.markdown.write_text(text + "\n")


if __name__ == "__main__":
    main()
