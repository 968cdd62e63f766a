"""Alpha-GAN: each loss term on hand-made networks, the evaluation extras, a few steps on ring8
and on fake images with a checkpoint that resumes, and `igm reconstruct`."""

import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import Fixed, run_igm
from hydra import compose, initialize_config_dir
from PIL import Image
from torch import nn

from igm_cli.cli import config_dir
from igm_cli.objectives.alpha_gan import AlphaGAN, l1_reconstruction
from igm_cli.trainer import train

X = torch.tensor([[1.0, 2.0], [-1.0, 0.5]])
Z = torch.tensor([[0.5, -1.0], [2.0, 0.0]])


def hand_made():
    """E(x) = x/2, G(z) = 2z + 0.1 (so G(E(x)) = x + 0.1), d(x) = x0 - x1, c(z) = z0 + z1."""
    return nn.ModuleDict({
        "encoder": Fixed(lambda x: x / 2), "generator": Fixed(lambda z: 2 * z + 0.1),
        "critic": Fixed(lambda x: x[:, 0] - x[:, 1]), "code_critic": Fixed(lambda z: z.sum(1))})


def test_each_loss_by_hand():
    nets, lam = hand_made(), 3.0
    model = AlphaGAN(lambda_rec=lam)
    code, x_rec, x_gen = X / 2, X + 0.1, 2 * Z + 0.1
    rec = 0.1  # |x - (x + 0.1)| per entry
    d = lambda x: x[:, 0] - x[:, 1]  # noqa: E731
    assert l1_reconstruction(X, x_rec).item() == pytest.approx(rec)
    assert model.encoder_loss(nets, X, Z).item() == pytest.approx(
        lam * rec - code.sum(1).mean().item())  # λ rec - log(C/(1-C)) at E(x)
    assert model.generator_loss(nets, X, Z).item() == pytest.approx(
        lam * rec - d(x_rec).mean().item() - d(x_gen).mean().item())
    expected_d = (F.softplus(-d(X)).mean() + F.softplus(d(x_rec)).mean()
                  + F.softplus(d(x_gen)).mean())
    assert model.critic_loss(nets, X, Z).item() == pytest.approx(expected_d.item())
    expected_c = F.softplus(-Z.sum(1)).mean() + F.softplus(code.sum(1)).mean()  # prior 1, codes 0
    assert model.code_critic_loss(nets, X, Z).item() == pytest.approx(expected_c.item())


def test_phases_update_one_network_each():
    phases = AlphaGAN().phases()
    assert [(p.name, p.trains) for p in phases] == [
        ("encoder", ("encoder",)), ("generator", ("generator",)), ("critic", ("critic",)),
        ("code_critic", ("code_critic",))]


def test_extra_metrics_by_hand():
    nets = hand_made()
    prior = torch.randn(400, 2, generator=torch.Generator().manual_seed(0))
    x = torch.randn(400, 2, generator=torch.Generator().manual_seed(1)) * 2  # codes x/2 ~ N(0, I)
    metrics = AlphaGAN().extra_metrics(nets, x, prior)
    assert metrics["rec"] == pytest.approx(0.1, abs=1e-6)
    assert abs(metrics["code_mmd"]) < 0.01
    far = AlphaGAN().extra_metrics(nets, x + 20, prior)["code_mmd"]  # codes shifted by 10
    assert far > 0.5
    grid = torch.cartesian_prod(torch.arange(10.0), torch.arange(10.0))  # 1 apart, >> 0.1
    labels = torch.arange(100) % 3  # the nearest training point of x + 0.1 is x itself
    agree = AlphaGAN().extra_metrics(nets, grid, prior, grid, labels, labels)["rec_nn_agree"]
    assert agree == 1.0
    shuffled = labels[torch.randperm(100, generator=torch.Generator().manual_seed(0))]
    assert AlphaGAN().extra_metrics(nets, grid, prior, grid, labels, shuffled)[
        "rec_nn_agree"] < 0.6


def run(tmp_path, overrides):
    with initialize_config_dir(str(config_dir()), version_base="1.3"):
        return train(compose("train", overrides=list(overrides)), tmp_path, [])


@pytest.mark.parametrize("data", [["dataset=ring8"],
                                  ["dataset=fake", "arch=dcgan", "arch.channels=8",
                                   "arch.z_dim=16", "arch.code_hidden=16", "dataset.size=32",
                                   "dataset.heldout=8", "eval.features=random_conv",
                                   "eval.metrics=[fid]", "eval.grid=4"]])
def test_trains_and_resumes_exactly(tmp_path, data):
    common = ["model=alpha_gan", *data, "train.batch_size=8", "train.lr_decay=none",
              "eval.n_samples=16", "train.log_every=1", "eval.every=2", "device=cpu"]
    first = run(tmp_path / "a", [*common, "train.steps=2"])
    assert first["status"] == "completed"
    assert {"rec", "code_mmd"} <= set(first["metrics"])
    assert all(math.isfinite(v) for v in first["metrics"].values())
    run(tmp_path / "a", [*common, "train.steps=4", f"resume={tmp_path / 'a'}"])
    run(tmp_path / "b", [*common, "train.steps=4"])
    a = torch.load(tmp_path / "a/checkpoints/last.pt", weights_only=True)
    b = torch.load(tmp_path / "b/checkpoints/last.pt", weights_only=True)
    assert set(a["optimizers"]) == {"encoder", "generator", "critic", "code_critic"}
    for key, value in a["nets"].items():
        assert torch.equal(value, b["nets"][key]), key
    rows = [json.loads(r) for r in (tmp_path / "b/metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [2, 4]


def test_reconstruct_cli(tmp_path):
    run(tmp_path / "pts", ["model=alpha_gan", "train.steps=2", "eval.every=2",
                           "eval.n_samples=16", "train.batch_size=8", "device=cpu"])
    out = tmp_path / "rec.npy"
    run_igm(["reconstruct", f"run={tmp_path / 'pts'}", "n=7", f"out={out}"], tmp_path,
            check=True)
    pair = np.load(out)
    assert pair.shape == (2, 7, 2) and pair.dtype == np.float32
    again = tmp_path / "again.npy"
    run_igm(["reconstruct", f"run={tmp_path / 'pts'}", "n=7", f"out={again}"], tmp_path,
            check=True)
    assert np.array_equal(np.load(again), pair)  # fixed held-out points, eval-mode networks

    run(tmp_path / "img", ["model=alpha_gan", "dataset=digits", "arch=dcgan", "arch.channels=8",
                           "arch.z_dim=16", "arch.code_hidden=16", "train.steps=2",
                           "eval.every=2", "eval.n_samples=16", "eval.grid=4",
                           "eval.features=random_conv", "eval.metrics=[fid]",
                           "train.batch_size=8", "device=cpu"])
    png = tmp_path / "rec.png"
    run_igm(["reconstruct", f"run={tmp_path / 'img'}", "n=4", f"out={png}"], tmp_path,
            check=True)
    with Image.open(png) as image:  # 2 x 2 pairs: 4 images of 32 px per row, 2 px padding
        assert image.size == (4 * 34 + 2, 2 * 34 + 2)
    result = run_igm(["reconstruct", f"run={tmp_path / 'img'}", "out=x.txt"], tmp_path)
    assert result.returncode == 2 and "must end in .npy or .png" in result.stderr


def test_nonsaturating_variant_and_bad_name():
    nets, model = hand_made(), AlphaGAN(lambda_rec=0.0, adversarial="nonsaturating")
    code, x_gen = X / 2, 2 * Z + 0.1
    assert model.encoder_loss(nets, X, Z).item() == pytest.approx(
        F.softplus(-code.sum(1)).mean().item())  # -log C(E(x))
    d = lambda x: x[:, 0] - x[:, 1]  # noqa: E731
    assert model.generator_loss(nets, X, Z).item() == pytest.approx(
        (F.softplus(-d(X + 0.1)).mean() + F.softplus(-d(x_gen)).mean()).item())
    from igm_cli.errors import IgmError

    with pytest.raises(IgmError, match="unknown model.adversarial 'log'; choose from: ratio"):
        AlphaGAN(adversarial="log")


def test_digits_reconstructions_keep_the_digit(tmp_path):
    """dcgan on digits with the shipped digits recipe, 300 steps: a reconstruction's nearest
    training image has the input's label far above chance (0.1; measured 0.89, 0.95, 0.96 at
    steps 100-300), and the codes move towards the prior (code_mmd 0.64 -> 0.33)."""
    run(tmp_path, ["model=alpha_gan", "dataset=digits", "arch=dcgan", "arch.channels=16",
                   "arch.z_dim=32", "arch.code_hidden=64", "train.batch_size=64",
                   "train.steps=300", "eval.every=100", "eval.n_samples=297",
                   "eval.features=random_conv", "eval.metrics=[fid]", "eval.plot=false",
                   "device=cpu"])
    rows = [json.loads(r) for r in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [100, 200, 300]
    assert rows[-1]["rec_nn_agree"] > 0.7, rows
    assert rows[-1]["code_mmd"] < rows[0]["code_mmd"], rows
    assert rows[-1]["rec"] < 0.2, rows  # a collapsed encoder (the mean image) gives 0.36
