"""End-to-end runs of the installed `igm` command; the run folder is read back with real readers."""

import json

import numpy as np
import pytest
import torch
from conftest import FAST
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

PRDC = ("precision", "recall", "density", "coverage")


@pytest.fixture(scope="module")
def run50(tmp_path_factory):
    """One 50-step run shared by the tests that read its folder."""
    from conftest import run_igm

    cwd = tmp_path_factory.mktemp("run50")
    result = run_igm(["train", "train.steps=50", "eval.every=25", "ckpt.every=20", *FAST,
                      "hydra.run.dir=run"], cwd, check=True)
    return cwd / "run", result


def test_run_writes_tensorboard_events(run50):
    run, _ = run50
    events = EventAccumulator(str(run), size_guidance={"scalars": 0, "images": 0})
    events.Reload()
    tags = events.Tags()
    for tag in ("loss/critic", "loss/generator", "perf/steps_per_sec", "metrics/modes",
                "metrics/hq", "metrics/kl_modes", "metrics/mmd", "metrics/w1"):
        assert tag in tags["scalars"], tag
    assert [e.step for e in events.Scalars("loss/critic")] == [10, 20, 30, 40, 50]
    assert [e.step for e in events.Scalars("metrics/w1")] == [25, 50]
    assert all(np.isfinite(e.value) for e in events.Scalars("loss/generator"))
    assert "samples" in tags["images"]
    image = events.Images("samples")[-1]
    assert image.step == 50 and image.width > 100 and image.encoded_image_string[:4] == b"\x89PNG"


def test_run_writes_metrics_and_summary(run50):
    run, result = run50
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [line["step"] for line in lines] == [25, 50]
    assert set(lines[0]) == {"step", "modes", "hq", "kl_modes", "mmd", "w1", *PRDC}
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["steps"] == 50
    assert summary["wall_seconds"] > 0 and summary["steps_per_second"] > 0
    assert summary["metrics"] == {k: v for k, v in lines[-1].items() if k != "step"}
    assert (run / ".hydra" / "config.yaml").is_file()
    assert "step 50/50" in result.stdout  # plain progress lines when stdout is not a terminal


def test_checkpoint_loads_with_weights_only(run50):
    run, _ = run50
    checkpoint = torch.load(run / "checkpoints" / "last.pt", weights_only=True)
    assert checkpoint["step"] == 50
    assert checkpoint["config"]["model"]["name"] == "gan"
    assert checkpoint["config"]["train"]["steps"] == 50
    assert {"generator.0.0.weight", "critic.1.0.weight"} <= set(checkpoint["nets"])
    assert set(checkpoint["optimizers"]) == {"critic", "generator"}
    assert {"torch", "data", "noise"} <= set(checkpoint["rng"])
    assert checkpoint["ema"] is not None
    assert not list((run / "checkpoints").glob(".*tmp*"))  # no temporary file left behind


def test_sample_writes_points_from_the_run(run50, tmp_path):
    from conftest import run_igm

    run, _ = run50
    run_igm(["sample", f"run={run}", "n=123", "out=pts.npy", "seed=5"], tmp_path, check=True)
    points = np.load(tmp_path / "pts.npy")
    assert points.shape == (123, 2) and points.dtype == np.float32
    run_igm(["sample", f"run={run}/checkpoints/last.pt", "n=123", "out=again.npy", "seed=5"],
            tmp_path, check=True)
    assert np.array_equal(points, np.load(tmp_path / "again.npy"))  # same seed, same points


def test_default_outputs_folder_and_1d_run(igm, tmp_path):
    igm("train", "dataset=gaussian_mixture_1d", "train.steps=20", "eval.every=20", *FAST,
        check=True)
    runs = list((tmp_path / "outputs").glob("*/*_gan_gaussian_mixture_1d_seed0"))
    assert len(runs) == 1
    summary = json.loads((runs[0] / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["metrics"]["modes"] in (0, 1, 2)


def test_npy_dataset_of_any_dimension(igm, tmp_path):
    np.save(tmp_path / "data.npy", np.random.default_rng(0).normal(size=(200, 5)))
    result = igm("train", "dataset=npy", "dataset.path=data.npy", "train.steps=20",
                 "eval.every=20", *FAST, "hydra.run.dir=run", check=True)
    assert "5-D noise; generator" in result.stdout + result.stderr
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert set(summary["metrics"]) == {"mmd", "w1", *PRDC}  # no modes for unknown data
    checkpoint = torch.load(tmp_path / "run" / "checkpoints" / "last.pt", weights_only=True)
    assert checkpoint["config"]["dataset"]["path"] == str(tmp_path / "data.npy")
    # arch.z_dim=auto: 5-D points get 5-D noise (2-D noise cannot cover a 4-D shell)
    assert checkpoint["nets"]["generator.0.0.weight"].shape == (128, 5)
    igm("sample", "run=run", "n=7", "out=s.npy", check=True)  # the sampler resolves auto too
    assert np.load(tmp_path / "s.npy").shape == (7, 5)


def test_multirun_runs_every_job_even_when_one_diverges(igm, tmp_path):
    result = igm("train", "-m", "model=gan,gan_minimax", "model.lr=1e-3,1e30",
                 "train.steps=20", "eval.every=20", *FAST)
    summaries = [json.loads(p.read_text())
                 for p in (tmp_path / "outputs" / "multirun").glob("*/*/*/summary.json")]
    assert len(summaries) == 4
    statuses = sorted((s["model"], s["status"]) for s in summaries)
    assert statuses == [("gan", "completed"), ("gan", "diverged"),
                        ("gan_minimax", "completed"), ("gan_minimax", "diverged")]
    assert result.returncode == 3  # some job diverged
