"""igm against hand-written training loops of the same recipes: time per training step.

Rows (`--rows`, default gan,wgan_gp,dcgan, plus dcgan_fast on a GPU):
  gan         igm's default recipe (NS-GAN + R1 + EMA + linear lr decay, ring8, 3x128, batch 64)
              vs scripts/reference/toy_gan.py
  wgan_gp     Gulrajani et al.'s toy WGAN-GP (3x512 ReLU, batch 256, 5 critic steps, λ 0.1,
              Adam 1e-4 β (0.5, 0.9)) vs scripts/reference/toy_wgan_gp.py
  dcgan       DCGAN 64 px, batch 64, the pytorch/examples recipe (BCE, Adam 2e-4 β (0.5, 0.999),
              no R1, no EMA) vs scripts/reference/dcgan_example.py (FakeData through a DataLoader)
  dcgan_fast  the same igm run with train.amp=bf16 train.channels_last=true (GPU), against the
              same reference runs

Each side is a whole process: the real `igm train` command (evaluation, checkpoint and log
periods beyond the run, so only the final evaluation and checkpoint remain) and the reference
script. Each runs at N and 3N steps; the marginal time per step is (t(3N) - t(N)) / 2N, so
start-up, the final evaluation and the checkpoint cancel. The runs alternate (igm, reference,
igm, reference, the order flipped every repeat) and the table gives medians over `--repeats`.
"igm / reference" is the reference's time per step over igm's: >= 1 means igm is as fast or faster.

    python scripts/bench_toy.py                                # CPU, one thread, 3 repeats
    python scripts/bench_toy.py --device cuda --repeats 2
    python scripts/bench_toy.py --rows gan --steps 2 --repeats 1   # a smoke test
    python scripts/bench_toy.py --steps gan=400,wgan_gp=40,dcgan=4 --markdown bench.md
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from igm_command import igm_command  # scripts/igm_command.py

HERE = Path(__file__).resolve().parent
REFERENCE = HERE / "reference"

# Every igm run: no evaluation, checkpoint, TensorBoard scalars or progress line before the last
# step; the one final evaluation is kept small (it cancels in the difference anyway).
QUIET = ["eval.every=1000000000", "ckpt.every=1000000000", "train.log_every=1000000000",
         "train.print_every=1000000000"]
TOY_EVAL = ["eval.n_samples=500", "eval.plot=false"]
IMAGE_EVAL = ["eval.metrics=[]", "eval.grid=16"]
CLOCKS = ("wall", "cpu")


@dataclass
class Row:
    title: str
    igm: list[str]        # overrides after `igm train`
    reference: str        # script under scripts/reference/
    reference_key: str    # rows with the same key share their reference runs
    steps_cpu: int        # N on the CPU (runs take N and 3N steps)
    steps_cuda: int
    needs_cuda: bool = False


ROWS = {
    "gan": Row("default recipe (NS-GAN + R1 + EMA + lr decay), ring8, 3x128, batch 64",
               [*TOY_EVAL], "toy_gan.py", "gan", 1000, 600),
    "wgan_gp": Row("WGAN-GP, the authors' toy recipe (3x512 ReLU, batch 256, 5 critic steps, "
                   "λ 0.1, Adam 1e-4); per generator step",
                   ["model=wgan_gp", "arch.hidden=512", "arch.activation=relu",
                    "model.gp_lambda=0.1", "model.lr=1e-4", "model.betas=[0.5,0.9]",
                    "model.ema=0", "train.lr_decay=none", "dataset=ring8",
                    "train.batch_size=256", *TOY_EVAL],
                   "toy_wgan_gp.py", "wgan_gp", 40, 200),
    "dcgan": Row("DCGAN 64 px, batch 64, the pytorch/examples recipe (no R1, no EMA)",
                 ["model=gan", "arch=dcgan", "arch.z_dim=100", "dataset=fake",
                  "dataset.resolution=64", "train.batch_size=64", "model.r1_gamma=0",
                  "model.ema=0", "model.lr=2e-4", "model.betas=[0.5,0.999]",
                  "train.lr_decay=none", "train.amp=off", "train.compile=false",
                  "train.channels_last=false", *IMAGE_EVAL],
                 "dcgan_example.py", "dcgan", 4, 200),
}
ROWS["dcgan_fast"] = Row(
    "DCGAN 64 px as above, igm with bf16 + channels_last (reference unchanged, fp32)",
    [o for o in ROWS["dcgan"].igm if not o.startswith(("train.amp", "train.channels_last"))]
    + ["train.amp=bf16", "train.channels_last=true"],
    "dcgan_example.py", "dcgan", 4, 200, needs_cuda=True)

CAPTION_DCGAN = (
    "DCGAN row, what differs between the two sides: igm's critic has no batch norm (by design: "
    "per-sample penalties), the example's discriminator has it; igm's generator loss is "
    "softplus(-v) on logits, the example's BCE on a sigmoid (the same function); igm draws a "
    "fresh noise and real batch for the generator step, the example reuses the discriminator "
    "step's fake batch; igm's fake images are one uint8 tensor resident on the device, indexed "
    "per step, the example's come from torchvision's FakeData through a DataLoader (2 workers, "
    "ToTensor per image); the example prints its losses with .item() every step.")




def igm_args(row: Row, steps: int, device: str, threads: int, dcgan_batch: int) -> list[str]:
    args = ["train", *row.igm, *QUIET, f"device={device}", f"train.threads={threads}",
            f"train.steps={steps}"]
    if row.reference == "dcgan_example.py" and dcgan_batch != 64:
        args.append(f"train.batch_size={dcgan_batch}")
    return args


def reference_args(row: Row, steps: int, device: str, threads: int, dcgan_batch: int,
                   dcgan_data: str) -> list[str]:
    args = [str(REFERENCE / row.reference), "--steps", str(steps), "--threads", str(threads)]
    if row.reference == "dcgan_example.py":
        args += ["--data", dcgan_data, "--batch-size", str(dcgan_batch)]
        return args + (["--cuda"] if device == "cuda" else [])
    return args + ["--device", device]


def shown(cmd: list[str]) -> str:
    """A reference command as a reader types it: python scripts/reference/NAME.py ..."""
    script = Path(cmd[1]).relative_to(HERE.parent)
    return " ".join(["python", str(script), *cmd[2:]])


def timed(cmd: list[str], timeout: float) -> dict[str, float]:
    """Seconds of one process: "wall", and "cpu" (user + system of the process and the children
    it waited for); raises RuntimeError with its last stderr line on failure."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise RuntimeError(f"timed out after {timeout:.0f} s") from None
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        lines = [ln for ln in done.stderr.splitlines()
                 if ln.strip() and "HYDRA_FULL_ERROR" not in ln] or ["?"]
        raise RuntimeError(f"exit {done.returncode}: {lines[-1].strip()[:200]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {"wall": wall, "cpu": cpu}


def marginal(short: tuple[int, float], long: tuple[int, float]) -> float:
    """Seconds per step from two (steps, seconds) runs: start-up cancels."""
    (n1, t1), (n2, t2) = short, long
    return (t2 - t1) / (n2 - n1)


def measure(sides: list[str], build, steps: int, repeats: int, timeout: float, log,
            once: bool = False, clock: str = "wall") -> dict[str, dict]:
    """Seconds per step of each side, on both clocks, the table's ``clock`` as "s_per_step";
    ``build(side, steps)`` gives a side's command. Marginal over N and 3N steps, or with
    ``once`` one run of N steps per side, whole-process seconds / N (a smoke test)."""
    samples = {name: {c: [] for c in CLOCKS} for name in sides}
    errors: dict[str, str] = {}
    for repeat in range(repeats):
        order = sides if repeat % 2 == 0 else sides[::-1]
        runs: dict[str, list[tuple[int, dict]]] = {name: [] for name in sides}
        for n in (steps,) if once else (steps, 3 * steps):
            for name in order:
                if name in errors:
                    continue
                try:
                    runs[name].append((n, timed(build(name, n), timeout)))
                except RuntimeError as exc:
                    errors[name] = str(exc)
                    log(f"  {name} at {n} steps failed: {exc}")
                    continue
                seconds = runs[name][-1][1]
                log(f"  repeat {repeat + 1}: {name} {n} steps {seconds['wall']:.2f} s wall, "
                    f"{seconds['cpu']:.2f} s CPU")
        for name in sides:
            if name in errors:
                continue
            for c in CLOCKS:
                points = [(n, seconds[c]) for n, seconds in runs[name]]
                samples[name][c].append(points[0][1] / points[0][0] if once
                                        else marginal(*points))
    results = {}
    for name in sides:
        if name in errors:
            results[name] = {"error": errors[name]}
            continue
        results[name] = {"s_per_step": statistics.median(samples[name][clock]),
                         "samples": samples[name][clock]}
        for c in CLOCKS:
            results[name][f"{c}_s_per_step"] = statistics.median(samples[name][c])
    return results


def run_rows(names: list[str], device: str, threads: int, repeats: int, steps: dict[str, int],
             dcgan_batch: int, dcgan_data: str, timeout: float, log=print,
             once: bool = False, clock: str = "wall") -> list[dict]:
    """Measure the rows; igm runs of rows sharing a reference are measured beside it."""
    igm = igm_command()
    by_reference: dict[str, list[str]] = {}
    for name in names:
        by_reference.setdefault(ROWS[name].reference_key, []).append(name)
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for key, group in by_reference.items():
            n = steps.get(key) or steps.get(group[0])
            ref_row = ROWS[group[0]]

            def build(side: str, n_steps: int, group=group, ref_row=ref_row) -> list[str]:
                if side == "reference":
                    return [sys.executable, *reference_args(ref_row, n_steps, device, threads,
                                                            dcgan_batch, dcgan_data)]
                run_dir = Path(tmp) / f"{side}_{n_steps}_{time.monotonic_ns()}"
                return [*igm, *igm_args(ROWS[side], n_steps, device, threads, dcgan_batch),
                        f"hydra.run.dir={run_dir}"]

            log(f"{', '.join(group)}: N = {n}, {repeats} repeat(s)")
            sides = [*group, "reference"]
            measured = measure(sides, build, n, repeats, timeout, log, once, clock)
            for name in group:
                results[name] = {"row": name, "title": ROWS[name].title,
                                 "steps": [n] if once else [n, 3 * n],
                                 "igm": measured[name], "reference": measured["reference"],
                                 "igm_command": " ".join(["igm", *igm_args(
                                     ROWS[name], n, device, threads, dcgan_batch)]),
                                 "reference_command": shown(build("reference", n))}
                igm_s = measured[name].get("s_per_step")
                ref_s = measured["reference"].get("s_per_step")
                results[name]["ratio"] = (ref_s / igm_s if igm_s and ref_s and igm_s > 0
                                          and ref_s > 0 else None)
    return [results[name] for name in names]


def machine(device: str, threads: int) -> str:
    if device == "cuda":
        import torch

        where = (f"{torch.cuda.get_device_name(0)} (CUDA {torch.version.cuda})"
                 if torch.cuda.is_available() else "device cuda, but CUDA is not available")
    else:
        model = platform.processor() or platform.machine()
        try:
            for line in Path("/proc/cpuinfo").read_text().splitlines():
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
        except OSError:
            pass
        where = f"CPU {model}, {os.cpu_count()} cores, {threads} thread(s) per run"
    return f"{where}; torch {importlib.metadata.version('torch')}"


def three_digits(value: float) -> str:
    """Three significant digits, never in e-notation."""
    return f"{value:.0f}" if abs(value) >= 100 else f"{value:.3g}"


def ms(seconds: float) -> str:
    return three_digits(seconds * 1e3)


def cell(result: dict) -> str:
    if "error" in result:
        return f"failed: {result['error']}"
    s = result["s_per_step"]
    rate = f"{three_digits(1 / s)} steps/s" if s > 0 else "–"
    return f"{ms(s)} ms/step ({rate})"


def markdown(results: list[dict], device: str, where: str, repeats: int, command: str,
             once: bool = False, clock: str = "wall") -> str:
    lines = ["| comparison | igm | reference | igm / reference | device |",
             "|---|---|---|---|---|"]
    for r in results:
        ratio = f"{r['ratio']:.2f}" if r["ratio"] is not None else "–"
        lines.append(f"| {r['title']} | {cell(r['igm'])} | {cell(r['reference'])} | {ratio} | "
                     f"{device} |")
    method = ("--once: whole-process seconds / N, start-up included (a smoke test, not a speed "
              "measurement)" if once else "marginal time per step: each side as a whole process "
              "at N and 3N steps, (t(3N) - t(N)) / 2N")
    clocks = {"wall": "wall-clock seconds", "cpu": "CPU seconds (user + system of the process "
              "and its children: less disturbed by other jobs on the cores, but DataLoader "
              "workers add theirs)"}
    other = "cpu" if clock == "wall" else "wall"
    notes = [f"Machine: {where}. Command: `{command}`.",
             f"Time per step: {method}, in {clocks[clock]}; median over {repeats} alternating "
             "repeat(s). igm / reference = the reference's time per step over igm's (>= 1: igm "
             "as fast or faster). Timings on a shared machine are noisy.",
             f"The same runs in {clocks[other].split(' (')[0]}: " + "; ".join(
                 f"{r['row']} igm {ms(r['igm'][f'{other}_s_per_step'])} ms, reference "
                 f"{ms(r['reference'][f'{other}_s_per_step'])} ms"
                 for r in results if "error" not in r["igm"] and "error" not in r["reference"])
             + "."]
    if any(r["row"].startswith("dcgan") for r in results):
        notes.append(CAPTION_DCGAN)
    notes.append("Commands at N steps:")
    for r in results:
        notes.append(f"- {r['row']} (N = {r['steps'][0]}): `{r['igm_command']}` vs "
                     f"`{r['reference_command']}`")
    return "\n".join(lines) + "\n\n" + "\n".join(notes) + "\n"


def parse_steps(text: str | None, names: list[str], device: str) -> dict[str, int]:
    defaults = {name: (ROWS[name].steps_cuda if device == "cuda" else ROWS[name].steps_cpu)
                for name in names}
    if not text:
        return defaults
    if "=" not in text:
        return dict.fromkeys(names, int(text))
    given = {k: int(v) for k, v in (part.split("=") for part in text.split(","))}
    unknown = set(given) - set(ROWS)
    if unknown:
        sys.exit(f"bench_toy: unknown row(s) in --steps: {', '.join(sorted(unknown))}; "
                 f"choose from {', '.join(ROWS)}")
    return {**defaults, **given}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--rows", help=f"comma-separated, from: {', '.join(ROWS)}")
    parser.add_argument("--steps", help="N for every row, or row=N,... (default per row and "
                        "device: " + ", ".join(f"{k} {r.steps_cpu}/{r.steps_cuda}"
                                               for k, r in ROWS.items()) + " on cpu/cuda)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="CPU threads of every run")
    parser.add_argument("--dcgan-batch", type=int, default=64,
                        help="batch of the DCGAN rows, both sides (64: the example's)")
    parser.add_argument("--dcgan-data", choices=["fakedata", "tensor"], default="fakedata",
                        help="the example's data: FakeData + DataLoader, or a resident tensor")
    parser.add_argument("--timeout", type=float, default=900, help="seconds per process")
    parser.add_argument("--clock", choices=CLOCKS, default="wall",
                        help="the table's clock (both are measured): wall, or CPU seconds")
    parser.add_argument("--once", action="store_true",
                        help="one run of N steps per side, start-up included (a smoke test)")
    parser.add_argument("--markdown", type=Path, help="also write the table here")
    parser.add_argument("--json", type=Path, help="also write the raw results here")
    args = parser.parse_args()
    names = args.rows.split(",") if args.rows else (
        ["gan", "wgan_gp", "dcgan"] + (["dcgan_fast"] if args.device == "cuda" else []))
    unknown = [n for n in names if n not in ROWS]
    if unknown:
        sys.exit(f"bench_toy: unknown row(s) {', '.join(unknown)}; choose from {', '.join(ROWS)}")
    if args.device == "cpu" and any(ROWS[n].needs_cuda for n in names):
        sys.exit("bench_toy: dcgan_fast (bf16 + channels_last) needs --device cuda")
    steps = parse_steps(args.steps, names, args.device)
    results = run_rows(names, args.device, args.threads, args.repeats, steps, args.dcgan_batch,
                       args.dcgan_data, args.timeout,
                       log=lambda msg: print(msg, file=sys.stderr, flush=True), once=args.once,
                       clock=args.clock)
    command = "python scripts/bench_toy.py " + " ".join(sys.argv[1:])
    table = markdown(results, args.device, machine(args.device, args.threads), args.repeats,
                     command.strip(), args.once, args.clock)
    print(table)
    if args.markdown:
        args.markdown.write_text(table)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    sys.exit(1 if any("error" in r["igm"] or "error" in r["reference"] for r in results) else 0)


if __name__ == "__main__":
    main()
