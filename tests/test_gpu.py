"""Checks that need a CUDA GPU (`pytest -m gpu`, run by scripts/gpu_check.sh); skipped elsewhere.

The speed switches with every model and both image archs, fp16 with its gradient scaler through
a resume, runs moved between CUDA and the CPU, and fixed noise that gives the same samples on
both."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import FAST, run_igm
from hydra import compose, initialize_config_dir

from igm_cli.build import registries
from igm_cli.cli import config_dir
from igm_cli.trainer import train

pytestmark = pytest.mark.gpu  # skipped without CUDA (tests/conftest.py)

TINY = ["arch.channels=16", "arch.z_dim=16", "arch.features=8", "arch.code_hidden=16",
        "train.batch_size=16", "train.log_every=1", "eval.n_samples=32", "eval.grid=4",
        "eval.features=random_conv", "eval.metrics=[fid,kid]", "device=cuda",
        "dataset=fake", "dataset.size=64", "dataset.heldout=16"]
# fp16 refuses gradient penalties (their input gradients underflow): these switch them off
NO_PENALTY = {"gan": "model.r1_gamma=0", "gan_minimax": "model.r1_gamma=0",
              "fgan": "model.r1_gamma=0", "fgan_ratio": "model.r1_gamma=0",
              "wgan_gp": "model.gp_lambda=0", "mmd_gan": "model.gp_lambda=0"}


def run(tmp_path, overrides):
    with initialize_config_dir(str(config_dir()), version_base="1.3"):
        cfg = compose("train", overrides=list(overrides))
    return train(cfg, tmp_path, [])


@pytest.mark.parametrize("amp", ["off", "bf16", "fp16"])
@pytest.mark.parametrize("arch", ["dcgan", "resnet"])
@pytest.mark.parametrize("model", registries()["model"].names())
def test_every_model_with_every_precision(tmp_path, model, arch, amp):
    extra = [NO_PENALTY[model]] if amp == "fp16" and model in NO_PENALTY else []
    summary = run(tmp_path, [f"model={model}", f"arch={arch}", f"train.amp={amp}",
                             "train.channels_last=true", "train.steps=3", "eval.every=3",
                             *TINY, *extra])
    assert summary["status"] == "completed", summary


@pytest.mark.parametrize("model, arch", [("gan", "dcgan"), ("wgan_gp", "resnet")])
def test_compile_with_bf16(tmp_path, model, arch):
    summary = run(tmp_path, [f"model={model}", f"arch={arch}", "train.amp=bf16",
                             "train.compile=true", "train.steps=4", "eval.every=4", *TINY])
    assert summary["status"] == "completed", summary


def test_fp16_scaler_through_a_resume(tmp_path):
    common = ["model=gan", "model.r1_gamma=0", "arch=dcgan", "train.amp=fp16",
              "train.lr_decay=none", "train.deterministic=true", "eval.every=100", *TINY]
    run(tmp_path / "split", [*common, "train.steps=6"])
    run(tmp_path / "split", [*common, "train.steps=12", f"resume={tmp_path / 'split'}"])
    run(tmp_path / "straight", [*common, "train.steps=12"])
    a = torch.load(tmp_path / "split/checkpoints/last.pt", weights_only=True)
    b = torch.load(tmp_path / "straight/checkpoints/last.pt", weights_only=True)
    assert a["scalers"] == b["scalers"] and a["scalers"]["critic"]
    for key in a["nets"]:
        assert torch.equal(a["nets"][key], b["nets"][key]), key


def test_cuda_runs_sample_eval_and_resume_on_the_cpu(tmp_path):
    run_igm(["train", "device=cuda", "train.steps=20", "eval.every=20", *FAST,
             "hydra.run.dir=run"], tmp_path, check=True)
    logged = json.loads((tmp_path / "run/metrics.jsonl").read_text().splitlines()[-1])
    cpu = run_igm(["eval", "run=run", "device=cpu", "n=300"], tmp_path, check=True).stdout
    values = dict(zip(cpu.split()[::2], map(float, cpu.split()[1::2])))
    for name in ("modes", "hq", "w1"):
        assert values[name] == pytest.approx(logged[name], rel=1e-3, abs=1e-3), name
    for device in ("cpu", "cuda"):
        run_igm(["sample", "run=run", "n=50", f"out={device}.npy", "seed=3",
                 f"device={device}"], tmp_path, check=True)
    import numpy as np

    assert np.allclose(np.load(tmp_path / "cpu.npy"), np.load(tmp_path / "cuda.npy"), atol=1e-4)
    resumed = run_igm(["train", "resume=run", "train.steps=30", "device=cpu"], tmp_path,
                      check=True)
    assert "cuda streams" in resumed.stdout
