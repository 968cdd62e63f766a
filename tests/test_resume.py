"""Exact resume, signals and divergence."""

import hashlib
import json
import signal
import subprocess
import time

import torch
from conftest import FAST, igm_command


def weights(path):
    checkpoint = torch.load(path, weights_only=True)
    return checkpoint["step"], {**checkpoint["nets"], **{f"ema.{k}": v
                                                         for k, v in checkpoint["ema"].items()}}


def assert_identical(a, b):
    step_a, wa = weights(a)
    step_b, wb = weights(b)
    assert step_a == step_b and wa.keys() == wb.keys()
    for key in wa:
        assert torch.equal(wa[key], wb[key]), key


def test_n_steps_then_resume_to_2n_equals_2n_straight(igm, tmp_path):
    common = ["train.lr_decay=none", "eval.every=1000", "eval.plot=false", *FAST]
    igm("train", "train.steps=30", *common, "hydra.run.dir=split", check=True)
    igm("train", "resume=split", "train.steps=60", check=True)  # the stored config is replayed
    igm("train", "train.steps=60", *common, "hydra.run.dir=straight", check=True)
    assert_identical(tmp_path / "split/checkpoints/last.pt",
                     tmp_path / "straight/checkpoints/last.pt")
    summary = json.loads((tmp_path / "split" / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["steps"] == 60


def test_resume_from_a_kept_checkpoint_with_lr_decay(igm, tmp_path):
    """With the linear decay the schedule depends on train.steps, so resume inside one
    schedule: a kept mid-run checkpoint resumed to the end equals the unbroken run."""
    igm("train", "train.steps=40", "ckpt.every=10", "ckpt.keep_every=20", "eval.every=1000",
        "eval.plot=false", *FAST, "hydra.run.dir=full", check=True)
    kept = tmp_path / "full/checkpoints/step_0000020.pt"
    assert kept.is_file()
    igm("train", f"resume={kept}", "hydra.run.dir=again", check=True)
    assert_identical(tmp_path / "full/checkpoints/last.pt", tmp_path / "again/checkpoints/last.pt")


def test_sigterm_saves_and_resumes(tmp_path):
    args = [*igm_command(), "train", "train.steps=100000", "train.log_every=10",
            "train.print_every=10", "eval.every=100000", "ckpt.every=100000", "hydra.run.dir=run"]
    proc = subprocess.Popen(args, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    for line in proc.stdout:  # wait until training is under way
        if line.startswith("step "):
            break
    proc.send_signal(signal.SIGTERM)
    sent = time.monotonic()
    out, err = proc.communicate(timeout=60)
    assert time.monotonic() - sent < 10
    assert proc.returncode == 143, err
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["status"] == "interrupted" and "SIGTERM" in summary["message"]
    step, _ = weights(tmp_path / "run/checkpoints/last.pt")
    assert step == summary["steps"] > 0
    resumed = subprocess.run([*igm_command(), "train", "resume=run", f"train.steps={step + 5}"],
                             cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert resumed.returncode == 0, resumed.stderr
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["steps"] == step + 5


def test_divergence_keeps_the_last_good_checkpoint(igm, tmp_path):
    igm("train", "train.steps=20", "eval.every=1000", "eval.plot=false", *FAST,
        "hydra.run.dir=run", check=True)
    checkpoint = tmp_path / "run/checkpoints/last.pt"
    before = hashlib.sha256(checkpoint.read_bytes()).hexdigest()
    result = igm("train", "resume=run", "train.steps=60", "model.lr=1e30")
    assert result.returncode == 3
    assert "diverged at step 21" in result.stdout
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["status"] == "diverged" and "step 21" in summary["message"]
    assert hashlib.sha256(checkpoint.read_bytes()).hexdigest() == before
