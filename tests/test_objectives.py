"""GAN losses on hand-made networks, against values computed by hand."""

import math

import pytest
import torch
from torch import nn

from igm_cli.objectives.alpha_gan import AlphaGAN
from igm_cli.objectives.fgan import FGAN
from igm_cli.objectives.gan import MinimaxGAN, NonSaturatingGAN
from igm_cli.objectives.ratio import RatioMatching


def linear_nets(w=(1.0, -2.0)):
    """critic v(x) = w·x, generator G(z) = z."""
    critic = nn.Linear(2, 1, bias=False)
    critic.weight.data = torch.tensor([w])
    return nn.ModuleDict({"critic": nn.Sequential(critic, nn.Flatten(0)),
                          "generator": nn.Identity()})


REAL = torch.tensor([[1.0, 0.0], [0.0, 1.0]])  # v = 1, -2
FAKE = torch.tensor([[2.0, 1.0], [0.0, 0.0]])  # v = 0, 0


def sigmoid(v):
    return 1 / (1 + math.exp(-v))


def test_critic_loss_is_binary_cross_entropy():
    loss = NonSaturatingGAN().critic_loss(linear_nets(), REAL.clone(), FAKE)
    # -E_p log D(x) - E_q log(1 - D(G(z)))
    expected = (-(math.log(sigmoid(1)) + math.log(sigmoid(-2))) / 2
                - (math.log(1 - sigmoid(0)) + math.log(1 - sigmoid(0))) / 2)
    assert loss.item() == pytest.approx(expected, rel=1e-6)


def test_r1_penalty_of_a_linear_critic():
    """∇_x (w·x) = w, so the penalty adds γ/2 ||w||² = 5 γ/2."""
    nets, gamma = linear_nets(), 0.4
    plain = NonSaturatingGAN().critic_loss(nets, REAL.clone(), FAKE)
    penalised = NonSaturatingGAN(r1_gamma=gamma).critic_loss(nets, REAL.clone(), FAKE)
    assert (penalised - plain).item() == pytest.approx(gamma / 2 * 5, rel=1e-6)


def test_generator_losses():
    nets = linear_nets()
    z = torch.tensor([[1.0, 0.0], [0.0, -1.0]])  # v = 1, 2
    ns = NonSaturatingGAN().generator_loss(nets, REAL, z)
    minimax = MinimaxGAN().generator_loss(nets, REAL, z)
    assert ns.item() == pytest.approx(-(math.log(sigmoid(1)) + math.log(sigmoid(2))) / 2)
    assert minimax.item() == pytest.approx(
        (math.log(1 - sigmoid(1)) + math.log(1 - sigmoid(2))) / 2)


def test_losses_are_stable_for_extreme_logits():
    nets = linear_nets(w=(1000.0, 0.0))
    z = torch.tensor([[-1.0, 0.0]])  # v = -1000: D(G(z)) ~ e^-1000
    assert NonSaturatingGAN().generator_loss(nets, REAL, z).item() == pytest.approx(1000)
    assert MinimaxGAN().generator_loss(nets, REAL, z).item() == pytest.approx(0, abs=1e-6)


def test_minimax_gradient_saturates_where_non_saturating_does_not():
    """The lecture's point: when D confidently rejects G(z), log(1 - D) has a vanishing
    gradient, while -log D keeps a strong one."""
    nets = linear_nets(w=(10.0, 0.0))
    grads = {}
    for name, objective in {"ns": NonSaturatingGAN(), "mm": MinimaxGAN()}.items():
        z = torch.tensor([[-1.0, 0.0]], requires_grad=True)
        objective.generator_loss(nets, REAL, z).backward()
        grads[name] = z.grad.norm().item()
    assert grads["ns"] > 9 and grads["mm"] < 1e-3


def test_phases_train_the_right_networks():
    phases = NonSaturatingGAN(n_critic=3).phases()
    assert [(p.name, p.trains, p.repeats) for p in phases] == [
        ("critic", ("critic",), 3), ("generator", ("generator",), 1)]


def test_r1_leaves_the_callers_tensor_alone():
    """Each critic loss with the R1 penalty takes the gradient at its own copy of the real
    batch: the caller's tensor does not start requiring grad (it did, changed in place, in
    gan, fgan, ratio_matching and alpha_gan), and the penalty is still γ/2 ||w||² = 5γ/2 for
    v(x) = w·x (for ratio_matching, r = softplus(v): R1 is on v)."""
    gamma = 0.4
    nets = linear_nets()
    nets["encoder"], nets["code_critic"] = nn.Identity(), nets["critic"]  # alpha_gan's extras
    for make in (lambda g: NonSaturatingGAN(r1_gamma=g), lambda g: FGAN("kl", r1_gamma=g),
                 lambda g: RatioMatching("pearson", r1_gamma=g),
                 lambda g: AlphaGAN(r1_gamma=g)):
        real = REAL.clone()
        penalised = make(gamma).critic_loss(nets, real, FAKE)
        assert not real.requires_grad, make(gamma)
        plain = make(0.0).critic_loss(nets, real, FAKE)
        assert (penalised - plain).item() == pytest.approx(gamma / 2 * 5, rel=1e-6)


def test_lazy_r1_takes_k_times_the_penalty_on_every_kth_step_only():
    """model.r1_every = k (StyleGAN2's lazy regularisation): the penalty γ/2 ||w||² is added
    times k on steps 0, k, 2k, ... and not at all in between, in each objective with R1; k = 1
    is the penalty on every step. The step is the one the trainer sets on the objective."""
    gamma, k = 0.4, 4
    nets = linear_nets()
    nets["encoder"], nets["code_critic"] = nn.Identity(), nets["critic"]
    for make in (lambda **kw: NonSaturatingGAN(**kw), lambda **kw: FGAN("kl", **kw),
                 lambda **kw: RatioMatching("pearson", **kw), lambda **kw: AlphaGAN(**kw)):
        plain = make(r1_gamma=0.0).critic_loss(nets, REAL.clone(), FAKE)
        lazy, every = make(r1_gamma=gamma, r1_every=k), make(r1_gamma=gamma)
        added = []
        for step in range(2 * k + 1):
            lazy.step = every.step = step
            added.append((lazy.critic_loss(nets, REAL.clone(), FAKE) - plain).item())
            assert (every.critic_loss(nets, REAL.clone(), FAKE) - plain).item() == \
                pytest.approx(gamma / 2 * 5, rel=1e-6)
        due = {0, k, 2 * k}
        assert all(abs(a) < 1e-7 for s, a in enumerate(added) if s not in due), (make, added)
        assert [added[s] for s in sorted(due)] == pytest.approx([k * gamma / 2 * 5] * 3, rel=1e-6)


def test_the_trainer_tells_the_objective_its_step(tmp_path, monkeypatch):
    """A 6-step run with model.r1_every=3 takes the penalty on steps 0 and 3, as the loss sees
    them (the trainer sets ``objective.step`` before each step)."""
    from conftest import FAST

    from igm_cli import cli

    seen = []
    real_loss = NonSaturatingGAN.critic_loss

    def recording(self, nets, real, z):
        seen.append((self.step, self.r1_now()))
        return real_loss(self, nets, real, z)

    monkeypatch.setattr(NonSaturatingGAN, "critic_loss", recording)
    monkeypatch.chdir(tmp_path)
    code = cli.main(["train", "train.steps=6", "eval.every=6", "eval.plot=false", *FAST,
                     "model.r1_gamma=0.5", "model.r1_every=3", "device=cpu",
                     "hydra.run.dir=run"])
    assert code == 0
    assert seen == [(0, 1.5), (1, 0.0), (2, 0.0), (3, 1.5), (4, 0.0), (5, 0.0)]
