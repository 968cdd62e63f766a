"""The benchmark scripts: the hand-written reference loops, bench_toy's timing arithmetic,
scripts/gpu_check.sh in its CPU mode (which also runs bench_images.py and bench_toy.py tiny), and
the `gpu` marker (tests that need CUDA skip themselves without it)."""

from __future__ import annotations

import importlib.util
import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
SCRIPTS = ROOT / "scripts"


def load(path: Path):
    """A script as a module; its folder on sys.path, as when it runs (scripts import
    igm_command.py beside them)."""
    if str(path.parent) not in sys.path:
        sys.path.insert(0, str(path.parent))
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while it runs
    spec.loader.exec_module(module)
    return module


def table_rows(markdown: str) -> list[list[str]]:
    """The body rows of the first Markdown table in ``markdown``, as lists of cells."""
    lines = [ln for ln in markdown.splitlines() if ln.startswith("|")]
    return [[c.strip() for c in ln.strip("|").split("|")] for ln in lines[2:]]


# ----------------------------------------------------------------------------
# Reference loops

def test_reference_ring8_is_eight_sharp_modes_on_the_circle():
    x = load(SCRIPTS / "reference/toy_gan.py").ring8(4000, torch.device("cpu"))
    radius = x.norm(dim=1)
    assert (radius - 2).abs().max() < 0.02 * 5  # std 0.02 around radius 2
    angle = torch.atan2(x[:, 1], x[:, 0]) % (2 * math.pi)
    mode = torch.round(angle / (2 * math.pi / 8)) % 8
    assert (angle - mode * 2 * math.pi / 8 + math.pi) % (2 * math.pi) - math.pi \
        == pytest.approx(torch.zeros_like(angle), abs=0.1)
    counts = torch.bincount(mode.long(), minlength=8)
    assert counts.min() > 4000 / 8 * 0.8  # every mode drawn, about equally


@pytest.mark.parametrize("script, kwargs", [
    ("toy_gan.py", {"batch": 64}),
    ("toy_wgan_gp.py", {"batch": 64}),
    ("dcgan_example.py", {"batch": 4, "data": "tensor", "print_every": 0}),
    ("dcgan_example.py", {"batch": 4, "data": "fakedata", "workers": 0, "print_every": 0}),
])
def test_reference_loop_runs_with_finite_losses(script, kwargs):
    losses = load(SCRIPTS / "reference" / script).train(3, "cpu", **kwargs)
    assert set(losses) == {"critic", "generator"}
    assert all(math.isfinite(v) for v in losses.values()), losses
    if script != "toy_wgan_gp.py":  # cross-entropies are positive
        assert min(losses.values()) > 0


def test_dcgan_example_networks_have_the_examples_shapes():
    example = load(SCRIPTS / "reference/dcgan_example.py")
    g, d = example.generator(), example.discriminator()
    images = g(torch.randn(2, 100, 1, 1))
    assert images.shape == (2, 3, 64, 64) and images.abs().max() <= 1
    p = d(images)
    assert p.shape == (2,) and ((p > 0) & (p < 1)).all()
    assert sum(isinstance(m, torch.nn.BatchNorm2d) for m in d.modules()) == 3  # as the example


# ----------------------------------------------------------------------------
# bench_toy: marginal time per step

def test_marginal_time_per_step_cancels_start_up(monkeypatch):
    bench = load(SCRIPTS / "bench_toy.py")
    per_step = {"igm": 0.010, "reference": 0.008}
    start_up = iter([5.0, 3.0, 5.5, 2.5, 4.0, 3.5, 6.0, 2.0, 5.0, 3.0, 5.0, 3.0])
    calls = []

    def fake_timed(cmd, timeout):
        side, n = cmd
        calls.append((side, n))
        wall = next(start_up) + per_step[side] * n
        return {"wall": wall, "cpu": 1.0 + 0.5 * per_step[side] * n}

    monkeypatch.setattr(bench, "timed", fake_timed)
    result = bench.measure(["igm", "reference"], lambda side, n: (side, n), 100, 3, 60,
                           log=lambda msg: None)
    # igm, repeat 1: ((5.5 + 3.0) - (5.0 + 1.0)) / 200 = 0.0125; repeat 2: ((2.0 + 3.0) -
    # (3.5 + 1.0)) / 200 = 0.0025; repeat 3, equal start-ups: the true 0.010 (also the median)
    assert result["igm"]["samples"] == pytest.approx([0.0125, 0.0025, 0.010])
    assert result["igm"]["s_per_step"] == pytest.approx(0.010)
    assert result["reference"]["samples"] == pytest.approx([0.0055, 0.018, 0.008])
    assert result["reference"]["s_per_step"] == pytest.approx(0.008)
    assert result["igm"]["cpu_s_per_step"] == pytest.approx(0.005)  # the other clock
    assert calls[:8] == [("igm", 100), ("reference", 100), ("igm", 300), ("reference", 300),
                         ("reference", 100), ("igm", 100), ("reference", 300), ("igm", 300)]


def test_bench_toy_records_a_failed_side_and_goes_on(monkeypatch):
    bench = load(SCRIPTS / "bench_toy.py")

    def fake_timed(cmd, timeout):
        if cmd[0] == "igm":
            raise RuntimeError("exit 2: igm: error: unknown key")
        return {"wall": 1.0 + 0.01 * cmd[1], "cpu": 1.0}

    monkeypatch.setattr(bench, "timed", fake_timed)
    result = bench.measure(["igm", "reference"], lambda side, n: (side, n), 10, 2, 60,
                           log=lambda msg: None)
    assert result["igm"] == {"error": "exit 2: igm: error: unknown key"}
    assert result["reference"]["s_per_step"] == pytest.approx(0.01)


# ----------------------------------------------------------------------------
# The gpu marker

@pytest.mark.gpu
def test_cuda_matmul_matches_cpu():
    a, b = torch.randn(64, 32, dtype=torch.float64), torch.randn(32, 16, dtype=torch.float64)
    assert torch.allclose((a.cuda() @ b.cuda()).cpu(), a @ b)


def test_gpu_marked_tests_skip_without_cuda(tmp_path):
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-m", "gpu", "-p",
                           "no:cacheprovider", str(Path(__file__))],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert re.search(r"\b1 skipped\b", done.stdout), done.stdout
    assert "needs CUDA" in done.stdout
    assert "passed" not in done.stdout and "failed" not in done.stdout


# ----------------------------------------------------------------------------
# scripts/gpu_check.sh, CPU mode

CHECKS = [
    "pytest -m gpu",
    "bench_images dcgan 32 px",
    "bench_images resnet 32 px",
    "matched: toy GAN, default recipe vs hand-written loop",
    "matched: toy WGAN-GP vs the authors' recipe loop",
    "matched: DCGAN 64 px fp32 vs pytorch/examples",
    "matched: DCGAN 64 px, igm bf16 + channels_last vs pytorch/examples",
    "host syncs per toy WGAN-GP step (sync_audit.py)",
    "DDP nccl, torchrun --nproc_per_node=2",
]
NEEDS_CUDA = {CHECKS[0], CHECKS[6], CHECKS[7], CHECKS[8]}


@pytest.fixture(scope="module")
def gpu_check_cpu(tmp_path_factory):
    out = tmp_path_factory.mktemp("gpu_check")
    env = {**os.environ, "OUT": str(out), "PYTHON": sys.executable}
    done = subprocess.run(["bash", str(SCRIPTS / "gpu_check.sh"), "--cpu"], cwd=out, env=env,
                          capture_output=True, text=True, timeout=600)
    return done, out


@pytest.mark.xdist_group("gpu_check")  # one worker runs the script once for both tests
def test_gpu_check_cpu_mode_writes_every_row(gpu_check_cpu):
    done, out = gpu_check_cpu
    assert done.returncode == 0, done.stdout + done.stderr
    written = (out / "gpu_check.md").read_text()
    assert written.strip() in done.stdout
    assert written.startswith("# igm GPU check: CPU mode")
    rows = {row[0]: row[1:] for row in table_rows(written)}
    assert list(rows) == CHECKS
    for check in NEEDS_CUDA:
        assert rows[check][0] == "skipped: no CUDA", (check, rows[check])
    for arch in ("dcgan", "resnet"):
        result, numbers = rows[f"bench_images {arch} 32 px"]
        assert result.startswith("ok") and "skipped: no CUDA" in result
        assert re.fullmatch(r"steps/s: off \d+\.\d", numbers), numbers
    for check in CHECKS[3:6]:
        result, numbers = rows[check]
        assert result.startswith("ok (CPU smoke run"), (check, result)
        assert re.fullmatch(r"igm [\d.]+ ms/step, reference [\d.]+ ms/step, "
                            r"igm / reference \d+\.\d\d", numbers), numbers


@pytest.mark.xdist_group("gpu_check")
def test_gpu_check_keeps_bench_toy_table_that_parses(gpu_check_cpu):
    _, out = gpu_check_cpu
    table = (out / "gpu_check_logs/bench_toy.md").read_text()
    rows = table_rows(table)
    assert [r[0].split(",")[0] for r in rows] == [
        "default recipe (NS-GAN + R1 + EMA + lr decay)", "WGAN-GP",
        "DCGAN 64 px"]
    for _, igm, reference, ratio, device in rows:
        cells = [re.fullmatch(r"([\d.]+) ms/step \(([\d.]+) steps/s\)", c)
                 for c in (igm, reference)]
        assert all(cells), (igm, reference)
        (igm_ms, igm_rate), (ref_ms, _) = [(float(m[1]), float(m[2])) for m in cells]
        assert igm_rate == pytest.approx(1000 / igm_ms, rel=0.01)
        assert float(ratio) == pytest.approx(ref_ms / igm_ms, rel=0.01, abs=0.006)
        assert device == "cpu"
    assert "--once: whole-process seconds / N" in table
    assert "igm's critic has no batch norm" in table  # the DCGAN caption
    images = (out / "gpu_check_logs/bench_images_resnet.md").read_text()
    assert table_rows(images)[0][0] == "off"


def test_gpu_check_only_runs_the_named_checks(tmp_path):
    done = subprocess.run([sys.executable, str(SCRIPTS / "gpu_check.py"), "--cpu", "--only",
                           "ddp,pytest"], cwd=tmp_path, env={**os.environ, "OUT": str(tmp_path)},
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    written = (tmp_path / "gpu_check.md").read_text()
    assert [row[0] for row in table_rows(written)] == [CHECKS[0], CHECKS[8]]  # table order
    assert "`scripts/gpu_check.sh --cpu --only pytest,ddp`" in written


def test_gpu_check_refuses_an_unknown_check_in_one_line(tmp_path):
    done = subprocess.run([sys.executable, str(SCRIPTS / "gpu_check.py"), "--cpu", "--only",
                           "pytest,bogus"], cwd=tmp_path, env={**os.environ, "OUT": str(tmp_path)},
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert ("unknown check bogus; choose from pytest, images_dcgan, images_resnet, matched, syncs, "
            "ddp" in done.stderr)
    assert not (tmp_path / "gpu_check.md").exists()


def test_gpu_check_gpu_mode_runs_what_its_time_limits_were_set_for(tmp_path, monkeypatch):
    """The GPU branch, driven on the CPU with the benchmarks replaced by their JSON: the image
    switches and matched rows it asks for exist, rows left out say how to run them, targets are
    judged, and the limits fit one 10-minute device call."""
    check = load(SCRIPTS / "gpu_check.py")
    images, toy = load(SCRIPTS / "bench_images.py"), load(SCRIPTS / "bench_toy.py")
    for names in check.IMAGE_CONFIGS_GPU.values():
        assert set(names.split(",")) <= set(images.CONFIGS)
    assert set(check.TARGETS) <= set(check.MATCHED_ROWS_GPU) <= set(toy.ROWS)
    assert sum(v for k, v in check.TIMEOUTS_GPU.items() if k != "ddp") <= 590
    commands = []

    syncs = {}

    def fake_run(cmd, timeout, log):
        commands.append(cmd)
        if "scripts/sync_audit.py" in cmd:
            Path(cmd[cmd.index("--json") + 1]).write_text(json.dumps(syncs))
            return 0, "", 1.0
        rows = cmd[cmd.index("--rows") + 1].split(",")
        ratios = {"wgan_gp": 0.7, "dcgan_fast": 1.6}
        Path(cmd[cmd.index("--json") + 1]).write_text(json.dumps([
            {"row": r, "igm": {"s_per_step": 0.01}, "reference": {"s_per_step": 0.01 * ratios[r]},
             "ratio": ratios[r]} for r in rows]))
        return 0, "", 1.0

    monkeypatch.setattr(check, "run", fake_run)
    results = {title: (result, numbers) for title, result, numbers
               in check.check_matched(True, 220, tmp_path)}
    assert "--rows" in commands[0] and commands[0][commands[0].index("--rows") + 1] == \
        "wgan_gp,dcgan_fast"
    assert results[CHECKS[3]] == ("not run: python scripts/bench_toy.py --device cuda --rows gan",
                                  "")
    result, numbers = results[CHECKS[4]]
    assert result == "below target" and "igm / reference 0.70 (target >= 1.5)" in numbers
    assert results[CHECKS[6]][0] == "target met"
    assert check.check_syncs(True, 40, tmp_path) == ("none", "no host sync in 50 generator steps")
    syncs["igm_cli/data/toy.py:77 mode = torch.multinomial(...)"] = 5.0
    assert check.check_syncs(True, 40, tmp_path) == (
        "5 per step", "5 at igm_cli/data/toy.py:77 mode = torch.multinomial(...)")


# ----------------------------------------------------------------------------
# scripts/sync_audit.py (its counting needs CUDA; here a planted warning stands in for a sync)

def test_sync_audit_names_the_igm_line_that_syncs_and_counts_per_step():
    driver = f"""
import json, sys, warnings
sys.path.insert(0, {str(SCRIPTS)!r})
import sync_audit
from igm_cli.data import toy
original = toy.GaussianModes.sample
def syncing(self, n, generator):
    warnings.warn("called a synchronizing CUDA operation")
    return original(self, n, generator)
toy.GaussianModes.sample = syncing
syncs = sync_audit.audit(["model=wgan_gp", "dataset=ring8", "arch.hidden=16",
                          "train.batch_size=16", "eval.n_samples=200", "eval.plot=false"], "cpu")
print("SYNCS", json.dumps(syncs))
"""
    done = subprocess.run([sys.executable, "-c", driver], cwd=ROOT, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    line = next(ln for ln in done.stdout.splitlines() if ln.startswith("SYNCS "))
    [(site, per_step)] = json.loads(line[len("SYNCS "):]).items()
    assert site.startswith("igm_cli/trainer.py:") and "dataset.sample(" in site, site
    assert per_step == 6  # each generator step draws data 5 times for the critic, once for G


# ----------------------------------------------------------------------------
# scripts/robustness.py: the data sets without modes, the floor, the table

def test_robustness_data_have_their_shapes_and_no_gaussian_modes():
    robustness = load(SCRIPTS / "robustness.py")
    gen = torch.Generator().manual_seed(0)
    arcs = robustness.arcs(4000, gen)
    radius, angle = arcs.norm(dim=1), torch.atan2(arcs[:, 1], arcs[:, 0]) % (2 * math.pi)
    assert (radius - 2).abs().max() < 0.15  # on the circle of radius 2 (noise 0.02)
    within = angle % (2 * math.pi / 8)  # position inside each 45° period: the first 22.5°
    assert within.max() < math.pi / 8 + 0.05 and within.min() >= 0
    counts = torch.histc(within, bins=5, min=0, max=math.pi / 8)
    assert counts.min() > 0.6 * counts.max()  # uniform along the arc, not peaked
    assert robustness.roll3d(100, gen).shape == (100, 3)
    shell = robustness.shell5d(4000, gen)
    assert shell.shape == (4000, 5) and (shell.norm(dim=1) - 2).abs().mean() < 0.06


def test_robustness_floor_is_a_w1_between_two_samples_and_the_table_reads_it(tmp_path):
    robustness = load(SCRIPTS / "robustness.py")
    robustness.N_FILE = 3000
    paths = robustness.write_data(tmp_path)
    floors = robustness.floors({"arcs": paths["arcs"]})
    assert 0 < floors["arcs"] < 0.3  # same distribution: small, and never 0 (two samples)
    rows = [{"model": "gan", "data": "arcs", "seed": 0, "status": "completed", "w1": 0.2,
             "wall": 1.0},
            {"model": "wgan", "data": "arcs", "seed": 0, "status": "failed", "w1": None,
             "wall": 1.0}]
    table = table_rows(robustness.table(rows, {"arcs": 0.1}))
    assert table == [["data-vs-data floor", "0.100"], ["`gan`", "0.200 (2.0x)"],
                     ["`wgan`", "failed"]]


# -------------------------------------------------------------------- stacked_digits_diagnose


def test_stacked_digits_diagnose_parts_on_known_cases():
    """The diagnosis script's parts: channels between two digits, nearest distances (leave one
    out), distance bands, and the shipped classifier's per-channel rates on real digits that
    the README quotes (training digits 0.959, held-out 0.929)."""
    from igm_cli.data.stacked import digits_split
    from igm_cli.metrics.digits import load_digit_classifier

    diagnose = load(SCRIPTS / "stacked_digits_diagnose.py")
    probs = torch.full((1, 3, 10), 0.0)
    probs[0, 0, 4] = 1.0                                        # confident
    probs[0, 1, 3], probs[0, 1, 9], probs[0, 1, 0] = 0.6, 0.38, 0.02  # between 3 and 9
    probs[0, 2] = 0.1                                           # spread over all ten
    assert diagnose.confident_channels(probs, 0.9).tolist() == [[True, False, False]]
    two, pairs = diagnose.between_two(probs, 0.9)
    assert two == 0.5 and pairs[0] == ((3, 9), 1)

    points = torch.tensor([[0.0, 0.0], [3.0, 4.0], [6.0, 8.0]])
    assert diagnose.nearest_distance(points, points).tolist() == [0.0, 0.0, 0.0]
    assert diagnose.nearest_distance(points, points, leave_one_out=True).tolist() == [5.0] * 3
    bands = diagnose.by_distance(torch.tensor([1.0, 2.5, 2.5, 7.0]),
                                 torch.tensor([True, True, False, False]))
    assert [(share, rate) for _, share, rate in bands] == [(0.25, 1.0), (0.5, 0.5), (0.25, 0.0)]

    classifier = load_digit_classifier()[0].eval()
    train, _, heldout, _ = digits_split(8)
    for digits, rate in ((train, 0.959), (heldout, 0.929)):
        images = diagnose.to_unit(digits).reshape(-1, 1, 8, 8).repeat(1, 3, 1, 1)
        channels = diagnose.confident_channels(
            diagnose.channel_probabilities(classifier, images), 0.9)
        assert channels[:, 0].double().mean().item() == pytest.approx(rate, abs=0.0015)


def test_stacked_digits_diagnose_reads_a_run(tmp_path, capsys):
    """End to end on a 2-step run: every line of the diagnosis, rates in [0, 1]."""
    from conftest import FAST, run_igm

    run_igm(["train", "dataset=stacked_digits", "dataset.resolution=8", "train.steps=2",
             "train.batch_size=8", "eval.every=100", *FAST, "hydra.run.dir=run"], tmp_path,
            check=True)
    load(SCRIPTS / "stacked_digits_diagnose.py").main(
        [str(tmp_path / "run"), "--n", "200", "--psi", "1,0.5"])
    out = capsys.readouterr().out
    pattern = r"confident(?: \(all three channels\):)? (\d\.\d+)"
    rates = [float(x) for x in re.findall(pattern, out)]
    assert len(rates) == 3 and all(0 <= r <= 1 for r in rates)  # all three, noise x 1 and x 0.5
    assert "per channel:" in out and "median L2 distance" in out and out.count("distance [") == 3
