"""Every GPU check of igm in one command, one Markdown table (run it as scripts/gpu_check.sh).

Checks, in order, each under its own time limit; a failure or a timeout is a row of the table,
and the next check still runs:
  - the tests that need CUDA (`pytest -m gpu`);
  - scripts/bench_images.py on dcgan and on resnet at 32 px, every speed switch;
  - scripts/bench_toy.py on the GPU: igm against hand-written loops (toy GAN, toy WGAN-GP,
    DCGAN 64 px fp32, DCGAN with igm's bf16 + channels_last), with the speed targets;
  - scripts/sync_audit.py: the host syncs in igm's toy WGAN-GP step, by source line;
  - DDP with nccl through torchrun on 2 GPUs (skipped with fewer).
Without CUDA (or with --cpu) the checks that need it say "skipped: no CUDA" and the rest run tiny.
`--only pytest,matched` runs some checks (names: CHECK_NAMES), to rerun what failed.

The time limits and what runs on a GPU come from the first run on a GPU (one H100, 2026-11-27),
where every process paid ~15 s of start-up (importing torch, CUDA's context) and the first
limits, set without a GPU, stopped every check: the CUDA tests took ~150 s one at a time (so
they run on 4 pytest-xdist workers when it is installed), each speed switch 15-55 s, each
matched row ~100 s (four processes). On a GPU the image benchmarks time the switches that
matter (fp16 is refused with the benchmark's gradient penalty, and compile alone is left out:
bf16 + compile + channels_last keeps it), and the matched comparisons run the two rows with
targets; `scripts/bench_toy.py --device cuda` runs all four. `scripts/sync_audit.py` then
counts the host syncs in igm's toy WGAN-GP step by source line (that row was 0.70x the
hand-written loop's speed on the GPU, though level on the CPU).

The table is printed and written to $OUT/gpu_check.md when OUT is set (else ./gpu_check.md);
each check's full output goes to gpu_check_logs/ beside it, the benchmarks' own tables too.
Exit status 1 when a check failed or timed out, else 0 (a speed target missed is a result,
not a failure).
"""

from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from igm_command import igm_command  # scripts/igm_command.py

ROOT = Path(__file__).resolve().parent.parent
SKIP_CUDA = "skipped: no CUDA"

# Seconds per check on a GPU; their sum with 1 GPU (no DDP) is 9.8 minutes, the worst case
# (expected ~8: the parts measured on the H100 add up to ~470 s).
TIMEOUTS_GPU = {"pytest": 110, "images_dcgan": 110, "images_resnet": 110, "matched": 220,
                "syncs": 40, "ddp": 60}
TIMEOUTS_CPU = {"pytest": 60, "images_dcgan": 120, "images_resnet": 120, "matched": 300,
                "syncs": 60, "ddp": 60}
TARGETS = {"wgan_gp": 1.5, "dcgan_fast": 1.5}  # igm / reference on the GPU
CHECK_NAMES = ("pytest", "images_dcgan", "images_resnet", "matched", "syncs", "ddp")
IMAGE_CONFIGS_GPU = {"dcgan": "off,channels_last,bf16,bf16+compile+channels_last",
                     "resnet": "off,bf16+compile+channels_last"}
MATCHED_ROWS_GPU = ("wgan_gp", "dcgan_fast")  # the rows with targets




def run(cmd: list[str], timeout: float, log: Path) -> tuple[int | None, str, float]:
    """(exit status, or None on timeout; output; seconds). The command runs in its own process
    group, killed whole at the timeout so no child (an igm run) outlives it."""
    started = time.perf_counter()
    with open(log, "w") as out:
        out.write("$ " + " ".join(cmd) + "\n")
        out.flush()
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
        try:
            code = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            code = None
    return code, log.read_text(), time.perf_counter() - started


def failure(code: int | None, output: str, timeout: float) -> str:
    """One line for a failed check: igm's own error line when there is one (torchrun prints a
    report after it), else the last line that is not a rule."""
    if code is None:
        return f"timed out after {timeout:.0f} s"
    lines = [ln.strip() for ln in output.splitlines()
             if ln.strip() and "HYDRA_FULL_ERROR" not in ln and ln.strip("=-_ ")] or ["?"]
    igm_errors = [ln for ln in lines if ln.startswith("igm: ")]
    return f"failed (exit {code}): {(igm_errors or lines)[-1][:160]}"


def check_pytest(cuda: bool, timeout: float, logs: Path) -> tuple[str, str]:
    if not cuda:
        return SKIP_CUDA, "the gpu-marked tests skip themselves without CUDA"
    workers = ["-n", "4"] if importlib.util.find_spec("xdist") else []
    code, output, seconds = run([sys.executable, "-m", "pytest", "-m", "gpu", "-q", *workers,
                                 "-p", "no:cacheprovider", "tests"], timeout, logs / "pytest.log")
    counts = ", ".join(re.findall(r"\d+ (?:passed|failed|skipped|errors?|xfailed|xpassed)",
                                  output.splitlines()[-1] if output.strip() else ""))
    failed = re.findall(r"^FAILED (\S+)", output, flags=re.M)
    if code == 0:
        return "passed", f"{counts} in {seconds:.0f} s"
    if code == 5:
        return "no tests marked gpu", "pytest collected none"
    if code is None or not failed:  # a timeout, or an error before any test ran
        return failure(code, output, timeout), counts
    return "failed", f"{counts}; {', '.join(failed[:6])}"


def check_images(arch: str, cuda: bool, timeout: float, logs: Path) -> tuple[str, str]:
    table = logs / f"bench_images_{arch}.json"
    table.unlink(missing_ok=True)  # never read an earlier run's numbers
    if cuda:  # every switch; the per-switch limit keeps one slow compilation from eating the rest
        args = ["--device", "cuda", "--configs", IMAGE_CONFIGS_GPU[arch], "--steps", "120",
                "--measure", "40", "--batch", "64", "--timeout", str(int(timeout / 2))]
    else:
        args = ["--device", "cpu", "--configs", "off", "--steps", "1", "--measure", "1",
                "--batch", "2", "--threads", "1"]
    code, output, _ = run([sys.executable, "scripts/bench_images.py", "--arch", arch,
                           "--resolution", "32", *args, "--json", str(table),
                           "--markdown", str(logs / f"bench_images_{arch}.md")],
                          timeout, logs / f"bench_images_{arch}.log")
    if not table.exists():
        return failure(code, output, timeout), ""
    results = json.loads(table.read_text())
    base = next((r["steps_per_sec"] for r in results if r["config"] == "off"
                 and "steps_per_sec" in r), None)
    parts, errors = [], {}
    for r in results:
        if "steps_per_sec" not in r:
            errors.setdefault(r["error"], []).append(r["config"])
        else:
            speedup = f" ({r['steps_per_sec'] / base:.2f}x)" if base and r["config"] != "off" \
                else ""
            parts.append(f"{r['config']} {r['steps_per_sec']:.1f}{speedup}")
    numbers = "; ".join(([f"steps/s: {', '.join(parts)}"] if parts else [])
                        + [f"{', '.join(names)} failed: {error}"
                           for error, names in errors.items()])
    if not cuda:
        return "ok (CPU: off only; the other switches skipped: no CUDA)", numbers
    return ("ok" if code == 0 else "failed"), numbers


MATCHED_TITLES = {
    "gan": "matched: toy GAN, default recipe vs hand-written loop",
    "wgan_gp": "matched: toy WGAN-GP vs the authors' recipe loop",
    "dcgan": "matched: DCGAN 64 px fp32 vs pytorch/examples",
    "dcgan_fast": "matched: DCGAN 64 px, igm bf16 + channels_last vs pytorch/examples",
}


def ms(seconds: float) -> str:
    value = seconds * 1e3
    return f"{value:.0f}" if abs(value) >= 100 else f"{value:.3g}"


def check_matched(cuda: bool, timeout: float, logs: Path) -> list[tuple[str, str, str]]:
    rows = list(MATCHED_TITLES)
    table = logs / "bench_toy.json"
    table.unlink(missing_ok=True)
    if cuda:
        rows = list(MATCHED_ROWS_GPU)
        args = ["--device", "cuda", "--repeats", "1", "--timeout", str(int(timeout / 3))]
    else:  # tiny: one run per side, start-up included; bf16 + channels_last is for GPUs
        rows.remove("dcgan_fast")
        args = ["--device", "cpu", "--once", "--steps", "2", "--repeats", "1",
                "--dcgan-batch", "2"]
    code, output, _ = run([sys.executable, "scripts/bench_toy.py", "--rows", ",".join(rows),
                           *args, "--json", str(table), "--markdown",
                           str(logs / "bench_toy.md")], timeout, logs / "bench_toy.log")
    results = {r["row"]: r for r in json.loads(table.read_text())} if table.exists() else {}
    out = []
    for name, title in MATCHED_TITLES.items():
        if name not in rows:
            out.append((title, f"not run: python scripts/bench_toy.py --device cuda --rows {name}"
                        if cuda else SKIP_CUDA, ""))
            continue
        if name not in results:
            out.append((title, failure(code, output, timeout), ""))
            continue
        r = results[name]
        errors = [f"{side}: {r[side]['error']}" for side in ("igm", "reference")
                  if "error" in r[side]]
        if errors:
            out.append((title, "failed", "; ".join(errors)))
            continue
        numbers = (f"igm {ms(r['igm']['s_per_step'])} ms/step, "
                   f"reference {ms(r['reference']['s_per_step'])} ms/step")
        if r["ratio"] is not None:
            numbers += f", igm / reference {r['ratio']:.2f}"
        if not cuda:
            out.append((title, "ok (CPU smoke run: start-up included, not a measurement)",
                        numbers))
        elif name in TARGETS:
            met = r["ratio"] is not None and r["ratio"] >= TARGETS[name]
            out.append((title, "target met" if met else "below target",
                        f"{numbers} (target >= {TARGETS[name]})"))
        else:
            out.append((title, "ok", numbers))
    return out


def check_syncs(cuda: bool, timeout: float, logs: Path) -> tuple[str, str]:
    """scripts/sync_audit.py on the toy WGAN-GP row: the host syncs in igm's step, by line."""
    if not cuda:
        return SKIP_CUDA, ""
    table = logs / "syncs.json"
    table.unlink(missing_ok=True)
    code, output, _ = run([sys.executable, "scripts/sync_audit.py", "--json", str(table)],
                          timeout, logs / "syncs.log")
    if code != 0 or not table.exists():
        return failure(code, output, timeout), ""
    syncs = json.loads(table.read_text())
    if not syncs:
        return "none", "no host sync in 50 generator steps"
    return (f"{sum(syncs.values()):g} per step",
            "; ".join(f"{n:g} at {site}" for site, n in list(syncs.items())[:3]))


def check_ddp(cuda: bool, gpus: int, timeout: float, logs: Path) -> tuple[str, str]:
    if not cuda:
        return SKIP_CUDA, ""
    if gpus < 2:
        return f"skipped ({gpus} GPU)", ""
    # torchrun runs a Python file: the igm console script, else the package as a module
    igm = igm_command()
    target = igm if len(igm) == 1 else ["-m", "igm_cli"]
    with tempfile.TemporaryDirectory() as tmp:
        code, output, seconds = run(
            [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
             *target, "train", "device=cuda",
             "train.steps=300", "eval.every=300", "ckpt.every=300", f"hydra.run.dir={tmp}"],
            timeout, logs / "ddp.log")
        summary = Path(tmp) / "summary.json"
        if code != 0 or not summary.exists():
            return failure(code, output, timeout), ""
        s = json.loads(summary.read_text())
        return ("passed" if s["status"] == "completed" else s["status"],
                f"2 processes (nccl), {s['steps']} steps, {s['steps_per_second']} steps/s, "
                f"{seconds:.0f} s")


def header(cuda: bool, gpus: int) -> str:
    torch_version = importlib.metadata.version("torch")
    if cuda:
        import torch

        names = sorted({torch.cuda.get_device_name(i) for i in range(gpus)})
        smi = shutil.which("nvidia-smi")
        driver = ""
        if smi:
            query = subprocess.run([smi, "--query-gpu=driver_version,memory.total",
                                    "--format=csv,noheader"], capture_output=True, text=True)
            driver = f", driver / memory {query.stdout.splitlines()[0].strip()}" \
                if query.returncode == 0 and query.stdout.strip() else ""
        return (f"igm GPU check: {gpus} x {', '.join(names)} (torch {torch_version}, CUDA "
                f"{torch.version.cuda}{driver})")
    return (f"igm GPU check: CPU mode, no CUDA used (torch {torch_version}, "
            f"{os.cpu_count()} CPU cores)")


def only_checks(text: str) -> tuple[str, ...]:
    """--only's value: known check names, in the table's order."""
    names = [n.strip() for n in text.split(",") if n.strip()]
    bad = [n for n in names if n not in CHECK_NAMES]
    if bad or not names:
        raise argparse.ArgumentTypeError(
            f"unknown check {bad[0] if bad else repr(text)}; choose from {', '.join(CHECK_NAMES)}")
    return tuple(n for n in CHECK_NAMES if n in names)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cpu", action="store_true", help="CPU mode even when CUDA is present")
    parser.add_argument("--out", type=Path, help="the table file (default $OUT/gpu_check.md, "
                        "else ./gpu_check.md)")
    parser.add_argument("--only", type=only_checks, default=CHECK_NAMES, metavar="NAMES",
                        help=f"comma-separated checks to run, from: {', '.join(CHECK_NAMES)} "
                        "(default: all)")
    args = parser.parse_args()
    out = args.out or Path(os.environ.get("OUT") or ".") / "gpu_check.md"
    out = out.resolve()
    logs = out.parent / "gpu_check_logs"
    logs.mkdir(parents=True, exist_ok=True)
    if args.cpu:
        cuda, gpus = False, 0
    else:
        import torch

        cuda = torch.cuda.is_available()
        gpus = torch.cuda.device_count() if cuda else 0
    limits = TIMEOUTS_GPU if cuda else TIMEOUTS_CPU
    started = time.perf_counter()
    rows: list[tuple[str, str, str]] = []

    def add(check: str, result: str, numbers: str) -> None:
        rows.append((check, result, numbers))
        print(f"[{time.perf_counter() - started:5.0f} s] {check}: {result}  {numbers}",
              file=sys.stderr, flush=True)

    if "pytest" in args.only:
        add("pytest -m gpu", *check_pytest(cuda, limits["pytest"], logs))
    for arch in ("dcgan", "resnet"):
        if f"images_{arch}" in args.only:
            add(f"bench_images {arch} 32 px",
                *check_images(arch, cuda, limits[f"images_{arch}"], logs))
    if "matched" in args.only:
        for row in check_matched(cuda, limits["matched"], logs):
            add(*row)
    if "syncs" in args.only:
        add("host syncs per toy WGAN-GP step (sync_audit.py)",
            *check_syncs(cuda, limits["syncs"], logs))
    if "ddp" in args.only:
        add("DDP nccl, torchrun --nproc_per_node=2", *check_ddp(cuda, gpus, limits["ddp"], logs))

    flags = (" --cpu" if args.cpu else "") + (
        f" --only {','.join(args.only)}" if args.only != CHECK_NAMES else "")
    table = [f"# {header(cuda, gpus)}", "",
             f"`scripts/gpu_check.sh{flags}`, "
             f"{time.perf_counter() - started:.0f} s; logs and the benchmarks' own tables in "
             f"{logs.name}/.", "", "| check | result | numbers |", "|---|---|---|"]
    table += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in rows]
    text = "\n".join(table) + "\n"
    print(text)
    out.write_text(text)
    bad = ("failed", "timed out")
    sys.exit(1 if any(r.startswith(bad) for _, r, _ in rows) else 0)


if __name__ == "__main__":
    main()
