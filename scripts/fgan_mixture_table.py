"""Reproduce the f-GAN paper's mixture experiment (Nowozin et al. 2016, §4, Table 3).

Fit a single Gaussian Q = N(μ, σ²) to a 1D Gaussian mixture P by minimising D_f(P||Q) for
several f, in two ways:
  (a) direct: D_f(P||Q_θ) by numerical integration (igm_cli.exact), minimised over (μ, log σ)
      with scipy's Nelder-Mead;
  (b) variational: `igm train model=fgan arch=gaussian_affine dataset=gaussian_mixture_1d`,
      the generator being μ + σz, trained through the Fenchel dual with a critic network.
Prints a Markdown table and, with --readme, writes it into README.md between markers.

    python scripts/fgan_mixture_table.py --readme
"""

from __future__ import annotations

import argparse
import math
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from scipy.optimize import minimize

from igm_cli.exact import Gaussian, GaussianMixture, exact_value

DIVERGENCES = ["kl", "reverse_kl", "jensen_shannon", "jeffrey", "pearson"]
MIXTURE = {"weights": [0.3, 0.7], "locs": [-1.5, 1.5], "scales": [0.5, 0.5]}
README = Path(__file__).resolve().parent.parent / "README.md"
MARKERS = ("<!-- fgan-mixture-table:start -->", "<!-- fgan-mixture-table:end -->")


def mixture() -> GaussianMixture:
    return GaussianMixture(MIXTURE["weights"], [[m] for m in MIXTURE["locs"]],
                           [[s] for s in MIXTURE["scales"]])


def direct(name: str) -> tuple[float, float, float]:
    """argmin over (μ, σ) of D_f(P||N(μ, σ²)) by quadrature; returns (μ, σ, D_f)."""
    p = mixture()

    def objective(theta):
        value = exact_value(name, p, Gaussian([theta[0]], [math.exp(theta[1])]),
                            method="quadrature").value
        return value if math.isfinite(value) else 1e6

    # Start from moment matching (the KL optimum) and from each mode; keep the best.
    starts = [(0.6, math.log(1.6))] + [(m, math.log(0.6)) for m in MIXTURE["locs"]]
    best = min((minimize(objective, s, method="Nelder-Mead",
                         options={"xatol": 1e-4, "fatol": 1e-7}) for s in starts),
               key=lambda r: r.fun)
    return best.x[0], math.exp(best.x[1]), best.fun


def variational(name: str, steps: int, seed: int, extra: list[str]) -> tuple[float, float]:
    """Train μ + σz with igm; returns the (EMA) generator's (μ, σ)."""
    with tempfile.TemporaryDirectory() as tmp:
        args = [sys.executable, "-m", "igm_cli", "train", "model=fgan", f"divergence={name}",
                "arch=gaussian_affine", "dataset=gaussian_mixture_1d",
                f"dataset.weights={MIXTURE['weights']}", f"dataset.locs={MIXTURE['locs']}",
                f"dataset.scales={MIXTURE['scales']}", f"train.steps={steps}", f"seed={seed}",
                "eval.every=1000000", "eval.plot=false", f"hydra.run.dir={tmp}/run", *extra]
        subprocess.run(args, check=True, capture_output=True, text=True)
        checkpoint = torch.load(f"{tmp}/run/checkpoints/last.pt", weights_only=True)
    generator = checkpoint["ema"] or {k.split(".", 1)[1]: v for k, v in
                                      checkpoint["nets"].items() if k.startswith("generator.")}
    return generator["mu"].item(), generator["log_sigma"].exp().item()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--readme", action="store_true", help="write the table into README.md")
    parser.add_argument("overrides", nargs="*", help="extra igm train overrides")
    args = parser.parse_args()
    # The paper's settings (batch 1024, step 0.01); the saddle-point generator loss, whose gradient
    # is the gradient of D_f at an optimal critic (the alternative loss minimises another f).
    extra = args.overrides or ["model.r1_gamma=0", "train.batch_size=1024", "model.lr=0.01",
                               "model.generator_loss=saddle"]
    rows = []
    for name in DIVERGENCES:
        start = time.time()
        mu, sigma, value = direct(name)
        t_mu, t_sigma = variational(name, args.steps, args.seed, extra)
        t_value = exact_value(name, mixture(), Gaussian([t_mu], [t_sigma]),
                              method="quadrature").value
        rows.append(f"| {name} | {mu:.4f} | {sigma:.4f} | {value:.4f} | {t_mu:.4f} | "
                    f"{t_sigma:.4f} | {t_value:.4f} |")
        print(rows[-1], f"({time.time() - start:.0f} s)", flush=True)
    command = " ".join(["python scripts/fgan_mixture_table.py", f"--steps {args.steps}",
                        f"--seed {args.seed}", *extra])
    table = "\n".join([
        f"P = {MIXTURE['weights'][0]}·N({MIXTURE['locs'][0]}, {MIXTURE['scales'][0]}²) + "
        f"{MIXTURE['weights'][1]}·N({MIXTURE['locs'][1]}, {MIXTURE['scales'][1]}²); "
        f"`{command}`", "",
        "| f | direct μ | direct σ | direct D_f | trained μ | trained σ | D_f at trained |",
        "|---|---|---|---|---|---|---|", *rows])
    print(table)
    if args.readme:
        text = README.read_text()
        block = f"{MARKERS[0]}\n{table}\n{MARKERS[1]}"
        pattern = re.escape(MARKERS[0]) + ".*?" + re.escape(MARKERS[1])
        README.write_text(re.sub(pattern, lambda _: block, text, flags=re.S)
                          if MARKERS[0] in text else text + "\n" + block + "\n")


if __name__ == "__main__":
    main()
