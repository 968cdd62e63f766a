"""The training state's numbers: the EMA's warm-up and batch-norm statistics, the fp16 scaler
through a checkpoint, where image data lives (issue 10), and checkpoints that load anywhere."""

from __future__ import annotations

import pytest
import torch
from conftest import FAST
from hydra import compose, initialize_config_dir
from torch import nn

from igm_cli.cli import config_dir
from igm_cli.generate import EVAL_SEED, generate
from igm_cli.state import GeneratorEMA, TrainState
from igm_cli.trainer import train


def compose_train(overrides):
    with initialize_config_dir(str(config_dir()), version_base="1.3"):
        return compose("train", overrides=[*FAST, "eval.plot=false", "device=cpu", *overrides])


def test_ema_decay_warms_up():
    ema = GeneratorEMA(nn.Linear(2, 2), beta=0.999, z_dim=2)
    assert ema.decay(0) == pytest.approx(0.1)  # the first update keeps 90 % of the weights
    assert ema.decay(90) == pytest.approx(91 / 100)
    assert ema.decay(10**6) == 0.999
    # after t updates the initial weights keep a share prod_s d_s: tiny, not 0.999^t = 37 %
    share = torch.tensor([ema.decay(t) for t in range(1000)]).prod().item()
    assert share < 1e-3


def test_short_run_ema_is_not_worse_than_the_generator(tmp_path):
    """600 steps of the default recipe: the EMA sampler's metrics are close to the online
    generator's (with a constant 0.999 the average kept 55 % of the random initial weights:
    2 modes and w1 ~0.6 where the generator had 8 and ~0.2)."""
    from igm_cli.data import build_dataset
    from igm_cli.metrics.distances import w1
    from igm_cli.metrics.toy import mode_metrics
    from igm_cli.sampling import load_generator

    cfg = compose_train(["train.steps=600", "eval.every=600"])
    summary = train(cfg, tmp_path, [])
    assert summary["status"] == "completed"
    checkpoint = torch.load(tmp_path / "checkpoints/last.pt", weights_only=True)
    ema, z_dim, _ = load_generator(str(tmp_path), "cpu", checkpoint)
    raw, _, _ = load_generator(str(tmp_path), "cpu", {**checkpoint, "ema": None})
    data = build_dataset(cfg.dataset, "cpu")
    real = data.fixed_sample(2500, EVAL_SEED)
    scores = {}
    for name, net in (("ema", ema), ("raw", raw)):
        fake = generate(net, 2500, z_dim, EVAL_SEED, "cpu")
        scores[name] = {**mode_metrics(fake, data.centers, data.stds), "w1": w1(fake, real)}
    assert scores["ema"]["modes"] >= scores["raw"]["modes"] - 1, scores
    assert scores["ema"]["w1"] <= 1.25 * scores["raw"]["w1"] + 0.02, scores


def test_ema_batch_norm_statistics_are_its_own(tmp_path):
    """dcgan's generator has batch norm: the averaged generator's running statistics are those
    of its own activations (before: copied from the online generator, whose weights differ)."""
    cfg = compose_train(["dataset=fake", "dataset.size=32", "dataset.heldout=8", "arch=dcgan",
                         "arch.channels=8", "arch.z_dim=16", "train.batch_size=16",
                         "train.steps=6", "eval.every=6", "eval.features=random_conv",
                         "eval.n_samples=16", "eval.grid=4", "model.ema=0.9"])
    assert train(cfg, tmp_path, [])["status"] == "completed"
    checkpoint = torch.load(tmp_path / "checkpoints/last.pt", weights_only=True)
    from igm_cli.sampling import load_generator

    ema, z_dim, _ = load_generator(str(tmp_path), "cpu", checkpoint)
    online, _, _ = load_generator(str(tmp_path), "cpu", {**checkpoint, "ema": None})
    norm = [m for m in ema.modules() if isinstance(m, nn.BatchNorm2d)][-1]
    seen = []
    handle = norm.register_forward_hook(lambda m, inputs, out: seen.append(inputs[0]))
    ema.train()
    with torch.no_grad():
        ema(torch.randn(4096, z_dim, generator=torch.Generator().manual_seed(1)))
    handle.remove()
    batch_mean, batch_var = seen[0].mean(dim=(0, 2, 3)), seen[0].var(dim=(0, 2, 3))
    assert torch.allclose(norm.running_var, batch_var, rtol=0.05), (norm.running_var, batch_var)
    assert torch.allclose(norm.running_mean, batch_mean, atol=0.05 * batch_var.sqrt().max())
    online_var = [m for m in online.modules() if isinstance(m, nn.BatchNorm2d)][-1].running_var
    assert not torch.allclose(online_var, batch_var, rtol=0.05)  # the old, wrong pairing


def test_fp16_scaler_state_survives_a_checkpoint():
    """The gradient scalers exist from the start, so a resumed fp16 run continues with the
    saved scale (before: restore() ran before the scalers were made, and the scale was lost)."""
    def state(amp):
        nets = nn.ModuleDict({"generator": nn.Linear(2, 2), "critic": nn.Linear(2, 1)})
        optimizers = {"critic": torch.optim.Adam(nets.critic.parameters()),
                      "generator": torch.optim.Adam(nets.generator.parameters())}
        return TrainState(nets, optimizers, {"critic": 1e-3, "generator": 1e-3}, 0.999, 2, 0,
                          torch.device("cpu"), amp=amp)

    first = state("fp16")
    assert all(s.is_enabled() for s in first.scalers.values())
    first.scalers["critic"].scale(torch.ones(()))  # a scaler starts its scale lazily
    first.scalers["critic"].update(new_scale=1024.0)
    saved = first.state_dict()
    second = state("fp16")
    second.load_state_dict(saved)
    assert second.scalers["critic"].get_scale() == 1024.0
    assert second.scalers["generator"].get_scale() == first.scalers["generator"].get_scale()
    assert not any(s.is_enabled() for s in state("off").scalers.values())


def test_on_device_false_keeps_images_in_host_memory():
    """dataset.on_device=false is honoured by the tensor image sets (it was ignored), and the
    batches are the same either way."""
    from igm_cli.data.images import digits, fake

    for build in (digits, fake):
        kept = build(on_device="false", device="cpu")
        moved = build(on_device="true", device="cpu")
        assert kept.on_device is False and moved.on_device is True
        a = kept.sample(8, torch.Generator().manual_seed(3))
        b = moved.sample(8, torch.Generator().manual_seed(3))
        assert torch.equal(a, b)


def test_checkpoint_tensors_are_on_the_cpu(tmp_path):
    summary = train(compose_train(["train.steps=3", "eval.every=3"]), tmp_path, [])
    assert summary["status"] == "completed"
    checkpoint = torch.load(tmp_path / "checkpoints/last.pt", weights_only=True,
                            map_location=None)
    tensors = []

    def collect(value):
        if isinstance(value, torch.Tensor):
            tensors.append(value)
        elif isinstance(value, dict):
            for v in value.values():
                collect(v)
        elif isinstance(value, (list, tuple)):
            for v in value:
                collect(v)

    collect(checkpoint)
    assert tensors and all(t.device.type == "cpu" for t in tensors)
    assert checkpoint["rng"]["device"] == "cpu"
