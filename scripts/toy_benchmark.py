"""The toy benchmark: every registered model on ring8 and grid25 over seeds 0, 1, 2 with the
shipped defaults and recipes, as `igm train -m experiment=toy_benchmark` (configs/experiment/
toy_benchmark.yaml) run in parallel by the joblib launcher, then `igm report` of the sweep:
mean ± std over seeds per model and data set, and one figure of final samples.
With --readme the table and the figure go into README.md between the toy-benchmark markers.

    python scripts/toy_benchmark.py --readme
    python scripts/toy_benchmark.py --extra model=gan,wgan_gp    # a part of it
    python scripts/toy_benchmark.py --collect outputs/toy_benchmark/...   # report a finished sweep
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import time
from pathlib import Path

from igm_command import igm_command  # scripts/igm_command.py

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
FIGURE = ROOT / "docs/figures/toy_benchmark.png"
MARKERS = ("<!-- toy-benchmark:start -->", "<!-- toy-benchmark:end -->")


def write_readme(block: str) -> None:
    text = README.read_text()
    start, end = (text.index(m) for m in MARKERS)
    README.write_text(text[: start + len(MARKERS[0])] + "\n" + block + "\n" + text[end:])


def table_of(report_md: Path) -> str:
    """The Markdown table (and the list of runs that did not complete) of igm report."""
    lines = report_md.read_text().splitlines()
    first = next(i for i, line in enumerate(lines) if line.startswith("|"))
    return "\n".join(lines[first:]).strip()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1,
                        help="jobs at once (joblib launcher)")
    parser.add_argument("--sweep-dir", type=Path,
                        default=ROOT / "outputs/toy_benchmark" / time.strftime("%Y-%m-%d_%H-%M-%S"))
    parser.add_argument("--collect", type=Path, help="only report a finished sweep folder")
    parser.add_argument("--readme", action="store_true", help="write the table and the figure")
    parser.add_argument("--extra", nargs="*", default=[], help="more overrides for every job")
    args = parser.parse_args()

    sweep_dir = (args.collect or args.sweep_dir).resolve()
    sweep = ["train", "-m", "experiment=toy_benchmark", "hydra/launcher=parallel",
             f"hydra.launcher.n_jobs={args.jobs}", f"hydra.sweep.dir={sweep_dir}", *args.extra]
    seconds = None
    if args.collect is None:
        started = time.time()
        print("igm " + " ".join(sweep), flush=True)
        subprocess.run([*igm_command(), *sweep], cwd=ROOT)  # failed jobs are in the report
        seconds = time.time() - started
    subprocess.run([*igm_command(), "report", str(sweep_dir), "by=model,dataset",
                    f"out={sweep_dir}"], cwd=ROOT, check=True)
    shown = " ".join(["igm", *sweep[:4], f"hydra.launcher.n_jobs={args.jobs}", *args.extra])
    took = f" The whole sweep took {seconds:.0f} s." if seconds else ""
    block = (f"Command: `python scripts/toy_benchmark.py --readme`, which runs `{shown}` and "
             f"`igm report SWEEP by=model,dataset`; {os.cpu_count()} CPU cores, {args.jobs} jobs "
             f"at once.{took} Mean ± std over seeds 0, 1, 2 (modes: mean/total ± std, "
             f"(min–max)); wall seconds: median per run, whole run, with the other jobs sharing "
             f"the cores.\n\n{table_of(sweep_dir / 'report.md')}\n\n"
             f"![final samples of each model's seed 0]({FIGURE.relative_to(ROOT)})")
    print(block)
    if args.readme:
        FIGURE.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(sweep_dir / "report.png", FIGURE)
        write_readme(block)


if __name__ == "__main__":
    main()
