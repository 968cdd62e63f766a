"""The lecture's parallel lines (Arjovsky et al. 2017, Example 1): P = (0, U[0, 1]) against
Q_θ = (θ, U[0, 1]) for θ from -1 to 1. For θ ≠ 0 the two are mutually singular, so every
f-divergence sits at its singular value (JS = 2 log 2 in igm's convention 2·JSD, KL = ∞, TV = 1)
and jumps to 0 at θ = 0, while W1 = |θ| shrinks continuously: the reason WGANs get a useful
gradient where the f-GANs get none.

Each point is `igm estimate` (in this process) with its default critic and training, beside
the exact value. Writes docs/figures/parallel_lines.png and prints a Markdown table.

    python scripts/parallel_lines.py [--thetas 17] [--steps 1000]
"""

from __future__ import annotations

import argparse
import io
import json
import math
import tempfile
import time
from contextlib import redirect_stdout
from pathlib import Path

import numpy as np
from hydra import compose, initialize_config_dir

from igm_cli.cli import config_dir
from igm_cli.estimate import estimate

ROOT = Path(__file__).resolve().parent.parent
# (igm divergence name, label, exact value at θ ≠ 0; at θ = 0 every one is 0)
PANELS = [
    ("wasserstein", "W1", None),  # |θ|
    ("jensen_shannon", "JS (2·JSD)", 2 * math.log(2)),
    ("kl", "KL", math.inf),
    ("total_variation", "TV", 1.0),
]


def run(name: str, theta: float, steps: int) -> tuple[float, float]:
    """(estimate, exact) of D(P, Q_θ) from igm estimate."""
    overrides = [f"divergence={name}", "p=lines", "q=lines", "p.theta=0", f"q.theta={theta}",
                 f"train.steps={steps}", "eval.n_samples=20000", "device=cpu"]
    with initialize_config_dir(str(config_dir()), version_base="1.3"):
        cfg = compose("estimate", overrides=overrides)
    with tempfile.TemporaryDirectory() as tmp, redirect_stdout(io.StringIO()):
        summary = estimate(cfg, Path(tmp))
    exact = math.inf if summary["exact"] == "inf" else summary["exact"]
    value = summary["estimate"] if summary["estimate"] is not None else math.nan
    return value, exact


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--thetas", type=int, default=17, help="θ values from -1 to 1")
    parser.add_argument("--steps", type=int, default=1000, help="critic training steps")
    parser.add_argument("--out", type=Path, default=ROOT / "docs/figures/parallel_lines.png")
    parser.add_argument("--replot", action="store_true",
                        help="redraw the figure from the .json beside --out, no training")
    args = parser.parse_args()
    started = time.time()
    if args.replot:
        saved = json.loads(args.out.with_suffix(".json").read_text())
        thetas = np.array(saved["wasserstein"]["theta"])
        results = {n: [(v, math.inf if e == "inf" else e)
                       for v, e in zip(saved[n]["estimate"], saved[n]["exact"])]
                   for n, _, _ in PANELS}
    else:
        thetas = np.linspace(-1, 1, args.thetas)
        results = {n: [run(n, float(t), args.steps) for t in thetas] for n, _, _ in PANELS}
    wall = time.time() - started

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(PANELS), figsize=(4 * len(PANELS), 3.4))
    fine = np.linspace(-1, 1, 401)
    for ax, (name, label, singular) in zip(axes, PANELS):
        values = np.array([v for v, _ in results[name]])
        if singular is None:
            ax.plot(fine, np.abs(fine), "k-", lw=1.5, label="exact |θ|")
        elif math.isinf(singular):
            ax.plot([-1, 0], [values.max() * 1.15] * 2, "k-", lw=1.5, label="exact: ∞ (θ ≠ 0)")
            ax.plot([0, 1], [values.max() * 1.15] * 2, "k-", lw=1.5)
            ax.set_yscale("symlog", linthresh=1.0)  # the estimate grows with training
        else:
            ax.plot(fine, np.where(fine == 0, np.nan, singular), "k-", lw=1.5,
                    label=f"exact: {singular:.3g} (θ ≠ 0)")
        ax.plot([0], [0], "ko", mfc="white")
        ax.plot(thetas, values, "o", color="tab:red", label="igm estimate")
        ax.set_title(label)
        ax.set_xlabel("θ")
        ax.legend(fontsize=8, loc="lower right" if singular is None else "center right")
    fig.suptitle(f"P = (0, U[0,1]), Q = (θ, U[0,1]): igm estimate ({args.steps} critic steps) "
                 "against the exact values", fontsize=10)
    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=90)

    print("| θ | " + " | ".join(label for _, label, _ in PANELS) + " |")
    print("|---|" + "---|" * len(PANELS))
    for i, t in enumerate(thetas):
        cells = [f"{results[n][i][0]:.3f} ({results[n][i][1]:.3g})" for n, _, _ in PANELS]
        print(f"| {t:+.3f} | " + " | ".join(cells) + " |")
    print(f"\nestimate (exact); {len(thetas) * len(PANELS)} estimates in {wall:.0f} s; "
          f"figure: {args.out.relative_to(ROOT) if args.out.is_relative_to(ROOT) else args.out}")
    (args.out.with_suffix(".json")).write_text(json.dumps(
        {n: {"theta": thetas.tolist(), "estimate": [v for v, _ in results[n]],
             "exact": [e if math.isfinite(e) else "inf" for _, e in results[n]]}
         for n, _, _ in PANELS}, indent=1))


if __name__ == "__main__":
    main()
