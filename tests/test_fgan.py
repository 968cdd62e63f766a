"""f-GAN objectives: losses on hand-made critics, tightness at the optimal critic, short runs."""

import math

import pytest
import torch
from conftest import Fixed
from hydra import compose, initialize_config_dir
from torch import nn

from igm_cli.cli import config_dir
from igm_cli.divergences import get_divergence
from igm_cli.errors import IgmError
from igm_cli.exact import Gaussian, exact_value
from igm_cli.objectives.fgan import FGAN, GENERATOR_LOSSES, FGANRatio
from igm_cli.registry import DIVERGENCES
from igm_cli.trainer import train


def nets_with(critic_fn):
    return nn.ModuleDict({"critic": Fixed(critic_fn), "generator": nn.Identity()})


REAL = torch.tensor([[0.5], [1.5]])
FAKE = torch.tensor([[-1.0], [2.0]])


def test_kl_parametrisation_one_by_hand():
    """KL: g_f(v) = v, f*(t) = exp(t - 1). With v(x) = x the bound is
    mean(real) - mean(exp(fake - 1))."""
    nets = nets_with(lambda x: x[:, 0])
    objective = FGAN("kl")
    bound = REAL.mean() - torch.exp(FAKE - 1).mean()
    assert objective.critic_loss(nets, REAL.clone(), FAKE).item() == pytest.approx(-bound.item())
    assert objective.generator_loss(nets, REAL, FAKE).item() == pytest.approx(-FAKE.mean().item())
    saddle = FGAN("kl", generator_loss="saddle").generator_loss(nets, REAL, FAKE)
    assert saddle.item() == pytest.approx(-torch.exp(FAKE - 1).mean().item())


def test_pearson_parametrisation_two_by_hand():
    """Pearson: f'(r) = 2(r - 1) and f*(f'(r)) = r f'(r) - f(r) = r² - 1, with r = e^v."""
    nets = nets_with(lambda x: x[:, 0])  # log r(x) = x
    objective = FGANRatio("pearson")
    r_real, r_fake = REAL.exp(), FAKE.exp()
    bound = (2 * (r_real - 1)).mean() - (r_fake**2 - 1).mean()
    loss = objective.critic_loss(nets, REAL.clone(), FAKE)
    assert loss.item() == pytest.approx(-bound.item(), rel=1e-6)
    assert objective.generator_loss(nets, REAL, FAKE).item() == pytest.approx(
        -(2 * (r_fake - 1)).mean().item(), rel=1e-6)


P, Q = Gaussian([0.0], [1.0]), Gaussian([0.5], [1.2])


def log_ratio(x):
    return P.log_prob(x) - Q.log_prob(x)


@pytest.mark.parametrize("name", ["kl", "reverse_kl", "pearson", "squared_hellinger",
                                  "jensen_shannon", "gan", "jeffrey"])
def test_both_parametrisations_are_tight_at_the_optimal_critic(name):
    """With r = p/q the bound E_p[T] - E_q[f*(T)] equals D_f(P||Q) (Monte Carlo)."""
    n = 400_000
    g = torch.Generator().manual_seed(0)
    x_p, x_q = P.sample(n, g), Q.sample(n, g)
    exact = exact_value(name, P, Q).value
    ratio = FGANRatio(name)
    t_p, _ = ratio.terms(log_ratio(x_p))
    _, fs_q = ratio.terms(log_ratio(x_q))
    assert (t_p.mean() - fs_q.mean()).item() == pytest.approx(exact, rel=0.03, abs=3e-3)
    if name in ("kl", "pearson", "jeffrey"):  # g_f = identity: v* = T* = f'(p/q)
        direct = FGAN(name)
        t_p, _ = direct.terms(direct.f.f_prime(log_ratio(x_p).exp()))
        _, fs_q = direct.terms(direct.f.f_prime(log_ratio(x_q).exp()))
        assert (t_p.mean() - fs_q.mean()).item() == pytest.approx(exact, rel=0.03, abs=3e-3)


def test_bad_generator_loss_is_refused():
    with pytest.raises(IgmError, match="'bogus'.*alternative, saddle"):
        FGAN("kl", generator_loss="bogus")


@pytest.mark.parametrize("model", ["fgan", "fgan_ratio"])
def test_every_divergence_trains_a_few_steps_on_ring8(model, tmp_path):
    """Every divergence each model takes (fgan_ratio refuses total_variation, tested below)."""
    with initialize_config_dir(str(config_dir()), version_base="1.3"):
        for name in DIVERGENCES.names():
            if model == "fgan_ratio" and name == "total_variation":
                continue
            cfg = compose("train", overrides=[
                f"model={model}", f"divergence={name}", "train.steps=15", "eval.every=15",
                "eval.n_samples=200", "eval.plot=false", "train.log_every=5", "device=cpu"])
            summary = train(cfg, tmp_path / name, [])
            assert summary["status"] == "completed", (name, summary)
            assert all(math.isfinite(v) for v in summary["metrics"].values())


def test_fgan_ratio_gets_no_gradient_from_total_variation():
    """Why fgan_ratio refuses TV: with T = f'(r) = sign(r - 1)/2 both losses are constant in the
    critic's output and in the generator's samples (almost everywhere)."""
    objective = FGANRatio("kl")
    objective.f = get_divergence("total_variation")  # what the constructor now refuses
    weight = torch.tensor([[0.7]], requires_grad=True)
    nets = nets_with(lambda x: (x @ weight)[:, 0])
    z = FAKE.clone().requires_grad_(True)
    objective.critic_loss(nets, REAL, z).backward()
    for update in GENERATOR_LOSSES:
        objective.update = update
        objective.generator_loss(nets, REAL, z).backward()
    assert weight.grad.abs().max() == 0 and z.grad.abs().max() == 0
    with pytest.raises(IgmError, match="model=fgan"):
        FGANRatio("total_variation")


def test_cli_refuses_total_variation_without_gradient(igm, tmp_path):
    from test_bad_input import assert_one_line_error

    assert_one_line_error(igm("train", "model=fgan_ratio", "divergence=total_variation"),
                          "divergence=total_variation", "zero gradient", "model=fgan")
    assert_one_line_error(igm("train", "model=ratio_matching", "model.divergence=total_variation"),
                          "model.divergence=total_variation", "zero gradient", "model=fgan")
    assert not (tmp_path / "outputs").exists()
