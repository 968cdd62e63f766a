"""The toy benchmark: every registered model on ring8 and grid25 over 3 seeds, shipped defaults.

Runs one Hydra multirun (`igm train -m model=... dataset=ring8,grid25 seed=0,1,2`), in parallel
through the joblib launcher where hydra-joblib-launcher is installed (`--jobs`, default the
number of cores), then reads each job's summary.json and writes
  - a Markdown table: model, dataset, modes (median and range over seeds), hq, kl_modes, w1
    (medians), wall seconds (median per run), the run status when not every run completed;
  - a PNG grid of final samples (seed 0, EMA generator; rows model, columns data set).
With --readme both go into README.md between the toy-benchmark markers.

    python scripts/toy_benchmark.py --readme
    python scripts/toy_benchmark.py --models gan,wgan_gp --seeds 0 --sweep-dir outputs/tb
    python scripts/toy_benchmark.py --collect outputs/multirun/...   # table from finished runs
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
FIGURE = ROOT / "docs/figures/toy_benchmark.png"
MARKERS = ("<!-- toy-benchmark:start -->", "<!-- toy-benchmark:end -->")
DATASETS = ["ring8", "grid25"]


def registered_models() -> list[str]:
    import igm_cli.objectives  # noqa: F401  (registers the models)
    from igm_cli.registry import MODELS

    return MODELS.names()


def has_joblib_launcher() -> bool:
    try:
        import hydra_plugins.hydra_joblib_launcher  # noqa: F401
    except ImportError:
        return False
    return True


def command(models: list[str], seeds: list[int], sweep_dir: Path, jobs: int) -> list[str]:
    cmd = ["igm", "train", "-m", f"model={','.join(models)}", f"dataset={','.join(DATASETS)}",
           f"seed={','.join(map(str, seeds))}", f"hydra.sweep.dir={sweep_dir}"]
    if jobs > 1 and has_joblib_launcher():
        cmd += ["hydra/launcher=joblib", f"hydra.launcher.n_jobs={jobs}"]
    return cmd


def collect(sweep_dir: Path) -> dict:
    """{(model, dataset): [summary, ...]} over the job folders of a sweep."""
    runs: dict = {}
    for summary_file in sorted(sweep_dir.glob("*/summary.json")):
        summary = json.loads(summary_file.read_text())
        runs.setdefault((summary["model"], summary["dataset"]), []).append(summary)
    return runs


def table(runs: dict, models: list[str]) -> str:
    lines = ["| model | dataset | modes (median, range) | hq | kl_modes | w1 | wall s | runs |",
             "|---|---|---|---|---|---|---|---|"]
    for model in models:
        for dataset in DATASETS:
            group = runs.get((model, dataset), [])
            done = [s for s in group if s["status"] == "completed"]
            if not done:
                lines.append(f"| {model} | {dataset} | – | – | – | – | – | "
                             f"{', '.join(s['status'] for s in group) or 'missing'} |")
                continue
            total = 8 if dataset == "ring8" else 25
            modes = [s["metrics"]["modes"] for s in done]

            def med(key: str, done=done) -> float:
                return statistics.median(s["metrics"][key] for s in done)

            status = (f"{len(done)}/{len(group)}" if len(done) == len(group)
                      else f"{len(done)}/{len(group)} completed")
            lines.append(
                f"| {model} | {dataset} | {statistics.median(modes):g}/{total} "
                f"({min(modes)}–{max(modes)}) | {med('hq'):.3f} | {med('kl_modes'):.3f} | "
                f"{med('w1'):.3f} | {statistics.median(s['wall_seconds'] for s in done):.0f} | "
                f"{status} |")
    return "\n".join(lines)


def figure(runs: dict, models: list[str], out: Path) -> None:
    """Final samples of seed 0 (2500 points, the evaluation's fixed noise) over the data."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from igm_cli.data.toy import grid25, ring8
    from igm_cli.sampling import load_sampler

    fig, axes = plt.subplots(len(DATASETS), len(models),
                             figsize=(1.9 * len(models), 2.0 * len(DATASETS)), squeeze=False)
    for j, model in enumerate(models):
        for i, dataset in enumerate(DATASETS):
            ax = axes[i][j]
            ax.set_xticks([])
            ax.set_yticks([])
            centers = {"ring8": ring8, "grid25": grid25}[dataset]().centers
            ax.scatter(centers[:, 0], centers[:, 1], s=12, c="tab:blue", marker="x", lw=0.8)
            seed0 = [s for s in runs.get((model, dataset), []) if s["seed"] == 0]
            if seed0 and (Path(seed0[0]["run_dir"]) / "checkpoints/last.pt").exists():
                x = load_sampler(seed0[0]["run_dir"])(2500, 0).cpu().numpy()
                ax.scatter(x[:, 0], x[:, 1], s=0.5, c="tab:red", alpha=0.4)
                m = seed0[0]["metrics"]
                ax.set_xlabel(f"{m['modes']} modes, hq {m['hq']:.2f}", fontsize=7)
            lim = 2.6 if dataset == "ring8" else 5.2
            ax.set_xlim(-lim, lim)
            ax.set_ylim(-lim, lim)
            if i == 0:
                ax.set_title(model, fontsize=8)
            if j == 0:
                ax.set_ylabel(dataset, fontsize=8)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=80)


def write_readme(block: str) -> None:
    text = README.read_text()
    start, end = (text.index(m) for m in MARKERS)
    README.write_text(text[: start + len(MARKERS[0])] + "\n" + block + "\n" + text[end:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", help="comma-separated (default: every registered model)")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1,
                        help="parallel jobs (joblib launcher); 1 runs them one after another")
    parser.add_argument("--sweep-dir", type=Path,
                        default=ROOT / "outputs/toy_benchmark" / time.strftime("%Y-%m-%d_%H-%M-%S"))
    parser.add_argument("--collect", type=Path, help="only tabulate a finished sweep folder")
    parser.add_argument("--readme", action="store_true", help="write table and figure link")
    parser.add_argument("--extra", nargs="*", default=[], help="more overrides for every run")
    args = parser.parse_args()
    models = args.models.split(",") if args.models else registered_models()
    seeds = [int(s) for s in args.seeds.split(",")]

    sweep_dir = args.collect or args.sweep_dir
    cmd = command(models, seeds, sweep_dir, args.jobs) + args.extra
    shown = " ".join(["igm", "train", "-m"]
                     + [c for c in cmd[3:] if not c.startswith("hydra.sweep")])
    if args.collect is None:
        igm = shutil.which("igm")
        full = [igm, *cmd[1:]] if igm else [sys.executable, "-m", "igm_cli", *cmd[1:]]
        started = time.time()
        print(" ".join(cmd), flush=True)
        subprocess.run(full, cwd=ROOT)  # a failed job is recorded in its summary; go on
        print(f"sweep finished in {time.time() - started:.0f} s", flush=True)
    runs = collect(sweep_dir)
    markdown = table(runs, models)
    figure(runs, models, FIGURE)
    cores = os.cpu_count()
    block = (f"Command: `python scripts/toy_benchmark.py --readme`, which runs `{shown}`; "
             f"{cores} CPU cores, `--jobs {args.jobs}`. Medians over seeds {args.seeds}; wall "
             "seconds per run (whole run, evaluations included, with the other jobs sharing "
             f"the cores).\n\n{markdown}\n\n![final samples, seed 0]"
             f"({FIGURE.relative_to(ROOT)})")
    print(block)
    if args.readme:
        write_readme(block)


if __name__ == "__main__":
    main()
