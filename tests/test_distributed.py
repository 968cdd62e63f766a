"""Several processes on CPUs (gloo), as torchrun and `train.devices=N` run them (issue 13):
2 ranks x B/2 equal one process x B, the replicas stay equal, rank 0 alone writes, resume is
exact, and a signal to any rank stops them all at one step with one checkpoint."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import FAST, igm_command, run_igm

# Every test here starts 2 processes: under pytest-xdist they run one after another on one
# worker (`--dist loadgroup`), not two at once on 2 cores.
pytestmark = pytest.mark.xdist_group("two_processes")

COMMON = ["train.lr_decay=none", "eval.every=1000", "eval.plot=false", "train.batch_size=64",
          "arch.hidden=32", "device=cpu", *FAST]


def final_weights(run: Path) -> dict[str, torch.Tensor]:
    checkpoint = torch.load(run / "checkpoints/last.pt", weights_only=True)
    return {**checkpoint["nets"], **{f"ema.{k}": v for k, v in (checkpoint["ema"] or {}).items()}}


def assert_close(a: dict, b: dict, rtol=1e-4, atol=1e-6):
    assert a.keys() == b.keys()
    for key in a:
        assert torch.allclose(a[key], b[key], rtol=rtol, atol=atol), (
            key, (a[key] - b[key]).abs().max().item())


def assert_same_networks(a: dict, b: dict, rtol=2e-3):
    """Each network (critic, generator, EMA, ...) as one vector: |a - b| <= rtol |a|."""
    assert a.keys() == b.keys()
    for net in {key.split(".")[0] for key in a}:
        keys = [key for key in a if key.split(".")[0] == net]
        va, vb = (torch.cat([x[key].flatten().double() for key in keys]) for x in (a, b))
        assert (va - vb).norm() <= rtol * va.norm(), (net, ((va - vb).norm() / va.norm()).item())


def torchrun() -> list[str]:
    """`torchrun --standalone --nproc_per_node=2 $(which igm)`."""
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
            igm_command()[0]]


@pytest.mark.parametrize("model", ["gan", "wgan_gp", "fgan"])
def test_two_ranks_equal_one_process(tmp_path, model):
    """The GAN family (with R1), WGAN-GP (per-sample interpolation weights) and the f-GAN:
    means over samples, so the gradients averaged over 2 ranks x 32 rows are those of one
    process x 64 rows, to float round-off."""
    # WGAN-GP takes 5 critic steps per step: 4 steps are 20 critic updates, as many as the others'
    steps = [f"train.steps={4 if model == 'wgan_gp' else 12}", f"model={model}"]
    run_igm(["train", *steps, *COMMON, "hydra.run.dir=one"], tmp_path, check=True)
    result = run_igm(["train", *steps, *COMMON, "train.devices=2", "hydra.run.dir=two"],
                     tmp_path, check=True)
    summary = json.loads((tmp_path / "two/summary.json").read_text())
    assert summary["status"] == "completed" and summary["world_size"] == 2
    assert summary["batch_per_rank"] == 32 and summary["ranks_in_sync"] is True
    assert "2 processes x 32" in result.stdout
    # float32 means over 32 + 32 rows vs 64 rows differ in the last bits; Adam's division by
    # sqrt(v) turns a round-off sign flip of a near-zero gradient into a whole step of that one
    # weight (a WGAN-GP bias moved 2.4e-3 apart), so each network is compared as one vector:
    # round-off keeps it within 6e-4 of its norm (GAN, f-GAN: 3e-8), and one step more of
    # training moves it by 7.6e-3: a rank drawing its own noise or ε is far outside 2e-3
    assert_same_networks(final_weights(tmp_path / "one"), final_weights(tmp_path / "two"))


def test_torchrun_rank0_writes_and_resume_is_exact(tmp_path):
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}

    def launch(*args):
        result = subprocess.run([*torchrun(), "train", *args],
                                cwd=tmp_path, env=env, capture_output=True, text=True,
                                timeout=300)
        assert result.returncode == 0, result.stderr[-3000:]
        return result

    launch("train.steps=10", *COMMON, "hydra.run.dir=split")
    launch("resume=split", "train.steps=20")
    launch("train.steps=20", *COMMON, "hydra.run.dir=straight")
    a, b = final_weights(tmp_path / "split"), final_weights(tmp_path / "straight")
    assert all(torch.equal(a[k], b[k]) for k in a)
    for run in ("split", "straight"):
        folder = tmp_path / run
        assert len(list(folder.glob("events.out.tfevents.*"))) == (2 if run == "split" else 1)
        assert sorted(p.name for p in (folder / ".hydra").iterdir()) == [
            "config.yaml", "hydra.yaml", "overrides.yaml"]
        summary = json.loads((folder / "summary.json").read_text())
        assert summary["world_size"] == 2 and summary["ranks_in_sync"] is True
    assert sorted(p.name for p in tmp_path.iterdir()) == ["split", "straight"]


def children(pid: int) -> list[int]:
    """Process ids whose parent is ``pid`` (Linux /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                found.append(int(entry.name))
    return found


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="needs /proc to find the ranks")
def test_sigterm_to_one_rank_stops_all(tmp_path):
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([*torchrun(), "train", "train.steps=100000",
                             *COMMON, "ckpt.every=100000", "hydra.run.dir=run"],
                            cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        for line in proc.stdout:
            if line.startswith("step "):
                break
        ranks = children(proc.pid)
        assert len(ranks) == 2, ranks
        os.kill(max(ranks), signal.SIGTERM)  # the rank started last: not rank 0, usually
        proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    summary = json.loads((tmp_path / "run/summary.json").read_text())
    assert summary["status"] == "interrupted", summary
    step = torch.load(tmp_path / "run/checkpoints/last.pt", weights_only=True)["step"]
    assert step == summary["steps"] > 0
    assert list((tmp_path / "run/checkpoints").iterdir()) == [tmp_path / "run/checkpoints/last.pt"]


def test_refusals_with_several_processes(tmp_path):
    result = run_igm(["train", "train.devices=2", "train.batch_size=63"], tmp_path)
    assert result.returncode == 2 and "divisible" in result.stderr
    assert not (tmp_path / "outputs").exists()
    result = run_igm(["train", "train.sync_batchnorm=true", "device=cpu"], tmp_path)
    assert result.returncode == 2 and "CUDA" in result.stderr


def test_a_nonfinite_loss_on_the_ranks_stops_them_all(tmp_path):
    result = run_igm(["train", "train.steps=40", *COMMON, "model.lr=1e30", "train.devices=2",
                      "hydra.run.dir=run"], tmp_path)
    assert result.returncode == 3, result.stderr[-2000:]
    summary = json.loads((tmp_path / "run/summary.json").read_text())
    assert summary["status"] == "diverged" and summary["world_size"] == 2
