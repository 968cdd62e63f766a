"""Hardening: the cases of the adversarial probe (issue 11), each failing before its fix.

Bad values are refused before anything is written (exit 2, one line, no traceback); a run
folder belongs to one process and survives its failures; nothing read from disk runs code or
reaches Hydra unchecked; paths with odd characters work.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import signal
import subprocess
import time

import numpy as np
import pytest
import torch
from conftest import FAST, igm_command, run_igm
from hydra import compose, initialize_config_dir

from igm_cli import cli
from igm_cli.trainer import train

# ---------------------------------------------------------------------------- bad values

BAD_VALUES = [  # (arguments, words the one-line error must contain)
    (["model.lr=-1"], ["model.lr", "> 0", "-1"]),
    (["model.lr=abc"], ["model.lr", "'abc'"]),
    (["model.lr=0"], ["model.lr", "> 0", "got 0"]),
    (["model.betas=[2,3]"], ["model.betas", "[2,3]", "[0, 1)"]),
    (["seed=1.5"], ["seed", "integer", "1.5"]),
    (["seed=abc"], ["seed", "'abc'"]),
    (["train.log_every=0"], ["train.log_every", ">= 1"]),
    (["train.print_every=0"], ["train.print_every", ">= 1"]),
    (["eval.n_samples=1"], ["eval.n_samples", ">= 2", "got 1"]),
    (["model.n_critic=0"], ["model.n_critic", ">= 1"]),
    (["model.n_critic=-2"], ["model.n_critic", "-2"]),
    (["model.ema=2"], ["model.ema", "[0, 1)", "got 2"]),
    (["model.ema=-0.5"], ["model.ema", "-0.5"]),
    (["model.r1_gamma=-1"], ["model.r1_gamma", ">= 0"]),
    (["model.r1_every=0"], ["model.r1_every", ">= 1", "got 0"]),
    (["ckpt.keep_every=-1"], ["ckpt.keep_every", ">= 0"]),
    (["arch.z_dim=0"], ["arch.z_dim", ">= 1"]),
    (["arch.hidden=0"], ["arch.hidden", ">= 1"]),
    (["arch.critic_hidden=0"], ["arch.critic_hidden", "null or an integer >= 1", "got 0"]),
    (["arch.depth=-1"], ["arch.depth", ">= 0"]),
    (["model.optimizer=sgd"], ["model.optimizer", "adam, rmsprop", "'sgd'"]),
    (["eval.sweep_metric=fid"], ["eval.sweep_metric", "'fid'", "w1"]),  # points: no FID
    (["ckpt.keep_best=fid"], ["ckpt.keep_best", "'fid'", "w1"]),
    (["train.devices=3", "train.batch_size=100"], ["train.batch_size=100", "3"]),  # split evenly
]


def assert_one_line_error(err: str, code: int, *needles, expected_code: int = 2):
    assert code == expected_code, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("igm: error: "), err
    assert "Traceback" not in err
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])


@pytest.mark.parametrize("args, needles", BAD_VALUES, ids=[a[0] for a, _ in BAD_VALUES])
def test_bad_values_are_refused_before_anything_is_written(args, needles, tmp_path, monkeypatch,
                                                           capsys):
    monkeypatch.chdir(tmp_path)
    code = cli.main(["train", *args])
    assert_one_line_error(capsys.readouterr().err, code, *needles)
    assert list(tmp_path.iterdir()) == []  # no outputs/ folder, no run folder


def test_images_for_sweep_metric_and_folders(tmp_path, monkeypatch, capsys):
    """Images report no w1 (the sweep metric must be one of eval.metrics); an image folder
    that is empty, holds one image, or holds a corrupt file is refused up front."""
    from PIL import Image

    monkeypatch.chdir(tmp_path)
    code = cli.main(["train", "dataset=fake", "arch=dcgan", "eval.sweep_metric=w1"])
    assert_one_line_error(capsys.readouterr().err, code, "eval.sweep_metric", "fid, kid")
    for folder, files in (("empty", 0), ("one", 1), ("corrupt", 3)):
        (tmp_path / folder).mkdir()
        for i in range(files):
            Image.new("RGB", (8, 8), (i, 0, 0)).save(tmp_path / folder / f"{i}.png")
    (tmp_path / "corrupt" / "2.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    expected = {"empty": "holds 0 image files", "one": "holds 1 image files",
                "corrupt": "not a readable image"}
    for folder, needle in expected.items():
        code = cli.main(["train", "dataset=image_folder", f"dataset.path={folder}",
                         "arch=dcgan", "dataset.resolution=32"])
        assert_one_line_error(capsys.readouterr().err, code, needle)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["corrupt", "empty", "one"]


# ---------------------------------------------------------------------------- a finished run

@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A 10-step toy run, shared by the tests that only read it (each copies what it changes)."""
    cwd = tmp_path_factory.mktemp("finished")
    run_igm(["train", "train.steps=10", "eval.every=10", "eval.plot=false", *FAST,
             "hydra.run.dir=run"], cwd, check=True)
    return cwd / "run"


def snapshot(folder):
    return {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.rglob("*") if p.is_file()}


def test_sample_and_eval_outputs(finished, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    (tmp_path / "home").mkdir()
    code = cli.main(["sample", f"run={finished}", "n=5", "out=/proc/samples.npy"])
    assert_one_line_error(capsys.readouterr().err, code, "/proc/samples.npy", "could not write")
    code = cli.main(["sample", f"run={finished}", "n=5", "out=missing/samples.npy"])
    assert_one_line_error(capsys.readouterr().err, code, "'missing'", "does not exist")
    assert not (tmp_path / "missing").exists()  # not silently created
    assert cli.main(["sample", f"run={finished}", "n=5", "out=~/s.npy"]) == 0
    assert np.load(tmp_path / "home" / "s.npy").shape == (5, 2)
    assert not (tmp_path / "~").exists()  # not a folder literally named ~
    code = cli.main(["eval", f"run={finished}", "n=50", "features=foo"])
    assert_one_line_error(capsys.readouterr().err, code, "features=", "points")


def test_refused_resumes_touch_nothing(finished, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    before = snapshot(finished)
    for args, needle in ((["arch.hidden=64"], "does not fit"),
                         (["dataset=grid25", "arch.z_dim=3"], "does not fit"),
                         (["model.optimizer=rmsprop"], "does not fit")):
        code = cli.main(["train", f"resume={finished}", "train.steps=20", *args])
        assert_one_line_error(capsys.readouterr().err, code, needle)
    assert snapshot(finished) == before  # .hydra/config.yaml included


def crafted_checkpoint(source, target, **changes):
    checkpoint = torch.load(source / "checkpoints" / "last.pt", weights_only=True)
    checkpoint.update(changes)
    target.mkdir(parents=True)
    torch.save(checkpoint, target / "last.pt")
    return target / "last.pt"


def test_stored_overrides_are_not_replayed_into_hydra(finished, tmp_path, monkeypatch, capsys):
    """A checkpoint that loads with weights_only=True but stores Hydra overrides: refused, and
    the file those overrides aimed at is untouched."""
    monkeypatch.chdir(tmp_path)
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    attacks = [f"hydra.job_logging.handlers.file.filename={victim}",
               "hydra.output_subdir=../../elsewhere", "+hydra.callbacks.x._target_=os.system",
               "~model", "model._target_=os.system", "+extra=1"]
    for i, attack in enumerate(attacks):
        ckpt = crafted_checkpoint(finished, tmp_path / f"crafted{i}", overrides=[attack])
        code = cli.main(["train", f"resume={ckpt}", "train.steps=20"])
        assert_one_line_error(capsys.readouterr().err, code, "refusing to replay")
    assert victim.read_text() == "precious\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["victim.txt", *[f"crafted{i}" for i in range(len(attacks))]])


class RunsCode:
    """Unpickling this runs code: what a crafted weights file does with weights_only=False."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_inception_weights_are_never_unpickled(tmp_path, monkeypatch):
    from igm_cli.metrics.images import FeaturesUnavailable, ImageMetrics

    pytest.importorskip("torch_fidelity")
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pth"
    with open(evil, "wb") as f:
        pickle.dump({"conv.weight": RunsCode(marker)}, f)
    with pytest.raises(FeaturesUnavailable, match="safely"):
        ImageMetrics(["fid"], "inception", weights=str(evil))
    assert not marker.exists()


def test_eval_never_takes_weights_from_the_checkpoint(tmp_path, monkeypatch):
    """igm eval on an image run whose checkpoint names a crafted eval.weights: the file is not
    opened (the command uses weights= or the torch hub cache only)."""
    from igm_cli.evaluate import evaluate_run
    from igm_cli.metrics.images import FeaturesUnavailable

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pth"
    with open(evil, "wb") as f:
        pickle.dump(RunsCode(marker), f)
    run = tmp_path / "run"
    with initialize_config_dir(str(cli.config_dir()), version_base="1.3"):
        cfg = compose("train", overrides=[
            "dataset=fake", "dataset.size=16", "dataset.heldout=8", "arch=dcgan",
            "arch.channels=8", "arch.z_dim=8", "train.batch_size=4", "train.steps=1",
            "eval.every=1", "eval.n_samples=8", "eval.grid=4", "eval.features=random_conv",
            "device=cpu", f"eval.weights={evil}"])
    assert train(cfg, run, [])["status"] == "completed"
    with pytest.raises(FeaturesUnavailable, match="not found in"):
        evaluate_run(str(run), ["fid"], 8, "inception", None, "cpu")
    assert not marker.exists()


# ---------------------------------------------------------------------------- run folders

def test_one_process_per_run_folder(finished, tmp_path):
    """A live run holds its folder: a second resume, or a fresh run pointed at it, is refused;
    its summary says "running" while it runs; leftovers of a killed writer are removed."""
    run = tmp_path / "live"
    run_igm(["train", "train.steps=5", "eval.every=5", "eval.plot=false", *FAST,
             "hydra.run.dir=live"], tmp_path, check=True)
    stale = run / "checkpoints" / ".last.pt.tmp-99999"
    stale.write_bytes(b"half a checkpoint")
    proc = subprocess.Popen([*igm_command(), "train", "resume=live", "train.steps=100000",
                             "train.log_every=10", "train.print_every=10",
                             "eval.every=100000", "ckpt.every=100000"],
                            cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        for line in proc.stdout:
            if line.startswith("step "):
                break
        assert json.loads((run / "summary.json").read_text())["status"] == "running"
        assert not stale.exists()
        second = run_igm(["train", "resume=live", "train.steps=200000"], tmp_path)
        assert_one_line_error(second.stderr, second.returncode, "in use by pid", str(proc.pid))
        fresh = run_igm(["train", "hydra.run.dir=live"], tmp_path)
        assert_one_line_error(fresh.stderr, fresh.returncode, "already holds files")
        other = run_igm(["train", f"hydra.run.dir={finished}"], tmp_path)
        assert_one_line_error(other.stderr, other.returncode, "already holds files")
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=60)
    assert proc.returncode == 143


def test_default_run_folders_are_unique(tmp_path):
    from igm_cli.rundir import unique_dir

    first, second = unique_dir(tmp_path / "a" / "x"), unique_dir(tmp_path / "a" / "x")
    assert first.name == "x" and second.name == "x_2" and first.is_dir() and second.is_dir()


def compose_train(overrides):
    with initialize_config_dir(str(cli.config_dir()), version_base="1.3"):
        return compose("train", overrides=[*FAST, "eval.plot=false", "device=cpu", *overrides])


def test_disk_full_keeps_the_last_checkpoint(tmp_path, monkeypatch):
    import igm_cli.checkpoint as checkpoint

    cfg = compose_train(["train.steps=20", "ckpt.every=10", "eval.every=100"])
    real_open = open
    calls = {"n": 0}

    def full_after_first(path, mode="r", *args, **kwargs):  # the second write finds a full disk
        if "w" in mode and ".tmp-" in str(path):
            calls["n"] += 1
            if calls["n"] > 1:
                return real_open("/dev/full", mode, *args, **kwargs)
        return real_open(path, mode, *args, **kwargs)

    monkeypatch.setattr(checkpoint, "open", full_after_first, raising=False)
    summary = train(cfg, tmp_path, [])
    assert summary["status"] == "failed" and summary["exit_code"] == 1
    assert "no space left on device" in summary["message"] and "\n" not in summary["message"]
    assert torch.load(tmp_path / "checkpoints/last.pt", weights_only=True)["step"] == 10
    assert json.loads((tmp_path / "summary.json").read_text())["status"] == "failed"


def test_double_sigint_inside_a_checkpoint_write(tmp_path, monkeypatch, capsys):
    import igm_cli.checkpoint as checkpoint

    real_save = checkpoint.save_atomic

    def interrupted_twice(payload, path):
        os.kill(os.getpid(), signal.SIGINT)
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.05)
        real_save(payload, path)

    monkeypatch.setattr(checkpoint, "save_atomic", interrupted_twice)
    summary = train(compose_train(["train.steps=50", "ckpt.every=5", "eval.every=100"]),
                    tmp_path, [])
    assert summary["status"] == "interrupted" and summary["exit_code"] == 130
    assert torch.load(tmp_path / "checkpoints/last.pt", weights_only=True)["step"] == 5
    assert "Traceback" not in capsys.readouterr().err


def test_torn_metrics_line_and_divergence_step(finished, tmp_path):
    """A torn last line of metrics.jsonl does not break a resume; a diverged run's summary
    names the diverging step."""
    import shutil

    run = tmp_path / "run"
    shutil.copytree(finished, run, ignore=shutil.ignore_patterns(".lock"))
    with open(run / "metrics.jsonl", "a") as f:
        f.write('{"step": 10, "mo')
    run_igm(["train", "resume=run", "train.steps=20", "eval.every=20"], tmp_path, check=True)
    lines = (run / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["step"] for line in lines] == [10, 20]
    result = run_igm(["train", "resume=run", "train.steps=60", "model.lr=1e30"], tmp_path)
    assert result.returncode == 3
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "diverged" and summary["steps"] == 21


def test_keep_every_is_independent_of_every(tmp_path):
    summary = train(compose_train(["train.steps=30", "ckpt.every=1000", "ckpt.keep_every=10",
                                   "eval.every=1000"]), tmp_path, [])
    assert summary["status"] == "completed"
    kept = sorted(p.name for p in (tmp_path / "checkpoints").glob("step_*.pt"))
    assert kept == ["step_0000010.pt", "step_0000020.pt", "step_0000030.pt"]


def test_odd_paths(tmp_path, monkeypatch):
    """Run folders with non-ASCII characters, commas and brackets resume; `~` in dataset.path
    and resume= is the home folder."""
    monkeypatch.setenv("HOME", str(tmp_path))
    np.save(tmp_path / "pts.npy", np.random.default_rng(0).normal(size=(100, 2)))
    odd = "rün, [1]"
    common = ["train.steps=10", "eval.every=10", "eval.plot=false", *FAST]
    run_igm(["train", "dataset=npy", "dataset.path=~/pts.npy", *common,
             f"hydra.run.dir={odd}"], tmp_path, check=True)
    run_igm(["train", f"resume={odd}", "train.steps=20"], tmp_path, check=True)
    run_igm(["train", f"resume=~/{odd}", "train.steps=30"], tmp_path / "..", check=True)
    assert json.loads((tmp_path / odd / "summary.json").read_text())["steps"] == 30
    checkpoint = torch.load(tmp_path / odd / "checkpoints/last.pt", weights_only=True)
    assert checkpoint["config"]["dataset"]["path"] == str(tmp_path / "pts.npy")


def test_multirun_with_a_bad_value_runs_the_others(tmp_path):
    result = run_igm(["train", "-m", "model.lr=-1,1e-3", "train.steps=10", "eval.every=10",
                      "eval.plot=false", *FAST, "hydra.sweep.dir=sweep"], tmp_path)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("igm: error:")]
    assert len(errors) == 1 and "model.lr must be a number > 0" in errors[0]
    statuses = sorted(json.loads(p.read_text())["status"]
                      for p in (tmp_path / "sweep").glob("*/summary.json"))
    assert statuses == ["completed", "failed"]


def test_preemption_saves_then_requeues_and_the_requeued_job_continues(tmp_path, monkeypatch):
    """SLURM/submitit: the preemption signal (USR2) stops the run at a step with a checkpoint and
    a summary, and only then runs the handler that was installed before (submitit's requeue);
    the requeued job, started again in the same folder, continues from the checkpoint and ends
    where an unbroken run ends."""
    import igm_cli.trainer as trainer

    cfg = compose_train(["train.steps=12", "train.lr_decay=none", "eval.every=100",
                         "ckpt.every=100"])
    calls = []

    def requeue(signum, frame):  # what submitit's handler does first: look at the job's state
        calls.append(json.loads((tmp_path / "job/summary.json").read_text())["status"])

    previous = signal.signal(signal.SIGUSR2, requeue)
    real_step = trainer.train_step

    def preempted_at_5(plans, draw, autocast, after_step, step):
        if step == 5:
            os.kill(os.getpid(), signal.SIGUSR2)
        return real_step(plans, draw, autocast, after_step, step)

    try:
        monkeypatch.setattr(trainer, "train_step", preempted_at_5)
        first = train(cfg, tmp_path / "job", [])
        monkeypatch.setattr(trainer, "train_step", real_step)
    finally:
        signal.signal(signal.SIGUSR2, previous)
    assert first["status"] == "interrupted" and first["steps"] == 6 and calls == ["interrupted"]
    second = train(cfg, tmp_path / "job", [])  # the requeued job: same folder, same config
    assert second["status"] == "completed" and second["steps"] == 12
    train(cfg, tmp_path / "straight", [])
    a = torch.load(tmp_path / "job/checkpoints/last.pt", weights_only=True)["nets"]
    b = torch.load(tmp_path / "straight/checkpoints/last.pt", weights_only=True)["nets"]
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("path", ["/tmp/a b", "/tmp/rün,[x]", "/tmp/it's", "/tmp/end\\",
                                  "/tmp/a=b", "/tmp/back\\slash", "/tmp/q\\'x"])
def test_quoted_paths_reach_hydra_unchanged(path):
    from hydra.core.override_parser.overrides_parser import OverridesParser

    from igm_cli.rundir import quote

    parsed = OverridesParser.create().parse_overrides([f"dataset.path={quote(path)}"])[0]
    assert parsed.value() == path


def test_ranks_from_torchrun_and_slurm_variables():
    from igm_cli.parallel import Ranks, ranks_from_env

    assert ranks_from_env({}) == Ranks(0, 1, 0)
    assert ranks_from_env({"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1"}) == Ranks(3, 4, 1)
    slurm = {"SLURM_PROCID": "5", "SLURM_NTASKS": "8", "SLURM_LOCALID": "1"}
    assert ranks_from_env(slurm) == Ranks(0, 1, 0)  # no MASTER_ADDR: not a process group
    assert ranks_from_env({**slurm, "MASTER_ADDR": "node1"}) == Ranks(5, 8, 1)
    assert Ranks(1, 2, 1).rows(64) == slice(32, 64) and Ranks().main


def test_an_unexpected_error_is_one_line_and_a_failed_summary(tmp_path, monkeypatch, capsys):
    """Any exception inside a run: status failed with the message, exit code 1, the traceback
    in train.log, one line on the console."""
    import igm_cli.trainer as trainer

    def broken(*args, **kwargs):
        raise RuntimeError("something inside the loop broke\nsecond line")

    monkeypatch.setattr(trainer, "train_step", broken)
    monkeypatch.chdir(tmp_path)
    code = cli.main(["train", "train.steps=5", "eval.every=5", "eval.plot=false", *FAST,
                     "device=cpu", "hydra.run.dir=run"])
    err = capsys.readouterr().err
    assert_one_line_error(err, code, "RuntimeError: something inside the loop broke",
                          "train.log", expected_code=1)
    summary = json.loads((tmp_path / "run/summary.json").read_text())
    assert summary["status"] == "failed" and summary["exit_code"] == 1
    assert "Traceback" in (tmp_path / "run/train.log").read_text()


def test_a_weights_path_is_not_replayed_from_a_checkpoint():
    assert cli.replayable(["model.lr=0.001", "eval.weights=/evil.pth", "seed=3"]) == [
        "model.lr=0.001", "seed=3"]
