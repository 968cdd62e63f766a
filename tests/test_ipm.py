"""IPM, kernel and ratio objectives: losses on hand-made critics, clipping, the gradient penalty,
a known density ratio recovered, and short ring8 runs that checkpoint and resume."""

import math

import pytest
import torch
from conftest import Fixed
from hydra import compose, initialize_config_dir
from torch import nn

from igm_cli.cli import config_dir
from igm_cli.divergences import get_divergence
from igm_cli.errors import IgmError
from igm_cli.exact import Gaussian
from igm_cli.kernels import mmd2_biased, mmd2_unbiased, rational_quadratic_kernel, rbf_kernel
from igm_cli.nets.mlp import MLPArch
from igm_cli.objectives.ipm import WGAN, WGANGP
from igm_cli.objectives.mmd import GMMN, MMDGAN
from igm_cli.objectives.ratio import RatioMatching
from igm_cli.trainer import train


def nets_with(**roles):
    return nn.ModuleDict({"generator": nn.Identity(), **roles})


REAL = torch.tensor([[0.5, 1.0], [1.5, -1.0], [2.0, 0.0]])
FAKE = torch.tensor([[-1.0, 0.5], [2.0, 2.0], [0.0, -0.5]])  # the generator is the identity


def test_wgan_losses_by_hand():
    nets = nets_with(critic=Fixed(lambda x: 2 * x[:, 0] - x[:, 1]))
    f_real, f_fake = torch.tensor([0.0, 4.0, 4.0]), torch.tensor([-2.5, 2.0, 0.5])
    objective = WGAN()
    assert objective.critic_loss(nets, REAL, FAKE).item() == pytest.approx(
        (f_fake.mean() - f_real.mean()).item())  # E_q f - E_p f
    assert objective.generator_loss(nets, REAL, FAKE).item() == pytest.approx(-f_fake.mean().item())


def test_clipping_bounds_every_critic_weight_after_a_step():
    torch.manual_seed(0)
    critic = MLPArch(hidden=32, depth=2).build("critic", (2,))
    assert max(p.abs().max().item() for p in critic.parameters()) > 0.1  # default init is wider
    nets = nets_with(critic=critic)
    objective = WGAN(clip=0.01)
    phase = objective.phases()[0]
    optimizer = torch.optim.RMSprop(critic.parameters(), lr=0.1)
    optimizer.zero_grad()
    phase.loss(nets, REAL, FAKE).backward()
    optimizer.step()
    objective.after_step(phase, nets)
    assert all(p.abs().max().item() <= 0.01 for p in critic.parameters())
    assert [phase.repeats_at(step) for step in (0, 24, 25, 500)] == [5, 5, 5, 5]


def test_wgan_warmup_schedule():
    """The authors' code: 100 critic steps for generator steps 0-24 and every 500th."""
    critic = WGAN(warmup=True).phases()[0]
    steps = [0, 24, 25, 499, 500, 501, 1000]
    assert [critic.repeats_at(step) for step in steps] == [100, 100, 5, 5, 100, 5, 100]


@pytest.mark.parametrize("gp_lambda", [10.0, 0.1])
def test_gradient_penalty_of_a_linear_critic(gp_lambda):
    """f(x) = w·x has ∇f = w everywhere, so the penalty is λ(||w|| - 1)² at any x̂."""
    w = torch.tensor([3.0, 4.0])  # ||w|| = 5
    nets = nets_with(critic=Fixed(lambda x: x @ w))
    loss = WGANGP(gp_lambda=gp_lambda).critic_loss(nets, REAL, FAKE)
    wgan = (FAKE @ w).mean() - (REAL @ w).mean()
    assert (loss - wgan).item() == pytest.approx(gp_lambda * 16, rel=1e-5)


def test_gmmn_loss_is_the_kernel_mmd():
    torch.manual_seed(0)
    real, fake = torch.randn(50, 2), torch.randn(40, 2) + 0.3
    bandwidths = (0.1, 1.0, 4.0)

    def kernel(x, y):
        return rbf_kernel(x, y, bandwidths)

    nets = nets_with()
    biased = mmd2_biased(real, fake, kernel)
    loss = GMMN(bandwidths, sqrt=True).generator_loss(nets, real, fake)
    assert loss.item() == pytest.approx(biased.sqrt().item(), rel=1e-5)
    loss = GMMN(bandwidths, sqrt=False, estimator="unbiased").generator_loss(nets, real, fake)
    assert loss.item() == pytest.approx(mmd2_unbiased(real, fake, kernel).item(), rel=1e-5)
    assert GMMN().networks == ("generator",) and [p.name for p in GMMN().phases()] == ["generator"]


def test_mmd_gan_critic_climbs_what_the_generator_descends():
    torch.manual_seed(0)
    real, fake = torch.randn(30, 2), torch.randn(30, 2) + 1.0
    features = Fixed(lambda x: torch.cat([x, x.pow(2)], 1))  # φ: R² -> R⁴
    nets = nets_with(feature_critic=features)
    mmd2 = mmd2_unbiased(features(real), features(fake), rational_quadratic_kernel)
    generator = MMDGAN().generator_loss(nets, real, fake)
    assert generator.item() == pytest.approx(mmd2.item(), rel=1e-5) and mmd2.item() > 0
    critic = MMDGAN(gp_lambda=0).critic_loss(nets, real, fake)
    assert critic.item() == pytest.approx(-mmd2.item(), rel=1e-5)
    penalised = MMDGAN(gp_lambda=1.0).critic_loss(nets, real, fake)
    assert math.isfinite(penalised.item()) and penalised.item() >= critic.item()


def test_ratio_matching_losses_by_hand():
    """Pearson: f*(f'(r)) = r² - 1, so the generator loss is -E_q[r²] + 1."""
    nets = nets_with(critic=Fixed(lambda x: x[:, 0]))  # r = softplus(x₁)
    r_real, r_fake = nn.functional.softplus(REAL[:, 0]), nn.functional.softplus(FAKE[:, 0])
    objective = RatioMatching("pearson")
    critic = 0.5 * r_fake.pow(2).mean() - r_real.mean()
    assert objective.critic_loss(nets, REAL.clone(), FAKE).item() == pytest.approx(critic.item())
    assert objective.generator_loss(nets, REAL, FAKE).item() == pytest.approx(
        (1 - r_fake.pow(2)).mean().item(), rel=1e-5)


def test_least_squares_recovers_a_known_ratio():
    """P = N(0, 1), Q = N(0.5, 1.2²): a small critic fitted by ½E_q[r²] - E_p[r] for 300 steps
    matches p/q on [-1.5, 1.5] (where p/q runs from 1.56 down to 0.55) to within 0.12."""
    p, q = Gaussian([0.0], [1.0]), Gaussian([0.5], [1.2])
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(1)
    critic = MLPArch(hidden=32, depth=2, activation="tanh").build("critic", (1,))
    nets = nets_with(critic=critic)
    objective = RatioMatching("pearson")
    optimizer = torch.optim.Adam(critic.parameters(), lr=1e-2)
    for _ in range(300):
        optimizer.zero_grad()
        objective.critic_loss(nets, p.sample(512, g).float(), q.sample(512, g).float()).backward()
        optimizer.step()
    grid = torch.linspace(-1.5, 1.5, 31)[:, None]
    with torch.no_grad():
        fitted, _ = objective.ratio(critic, grid)
    exact = (p.log_prob(grid) - q.log_prob(grid)).exp().reshape(-1).float()
    assert (fitted - exact).abs().max().item() < 0.12


MODELS = ["wgan", "wgan_gp", "gmmn", "mmd_gan", "ratio_matching"]


@pytest.mark.parametrize("model", MODELS)
def test_trains_on_ring8_and_resumes_exactly(model, tmp_path):
    """A few steps, a checkpoint, a resume to twice as many: the same weights as one run."""
    common = ["train.lr_decay=none", "eval.n_samples=200", "eval.plot=false", "train.log_every=2",
              "device=cpu", f"model={model}", "train.batch_size=64"]
    with initialize_config_dir(str(config_dir()), version_base="1.3"):
        split = train(compose("train", overrides=[*common, "train.steps=3"]), tmp_path / "a", [])
        assert split["status"] == "completed"
        assert all(math.isfinite(v) for v in split["metrics"].values())
        resumed = compose("train", overrides=[*common, "train.steps=6",
                                              f"resume={tmp_path / 'a'}"])
        assert train(resumed, tmp_path / "a", [])["steps"] == 6
        straight = train(compose("train", overrides=[*common, "train.steps=6"]), tmp_path / "b", [])
        assert straight["status"] == "completed"
    a = torch.load(tmp_path / "a/checkpoints/last.pt", weights_only=True)
    b = torch.load(tmp_path / "b/checkpoints/last.pt", weights_only=True)
    assert a["step"] == b["step"] == 6
    for key, value in a["nets"].items():
        assert torch.equal(value, b["nets"][key]), key


@pytest.mark.parametrize("role", ["critic", "feature_critic", "code_critic"])
def test_spectral_norm_on_every_critic_layer(role):
    """arch.spectral_norm=true: each Linear weight of a critic is divided by its top singular
    value (power iteration; exact after enough forward passes); generators are left alone."""
    torch.manual_seed(0)
    arch = MLPArch(hidden=32, depth=2, spectral_norm=True)
    critic = arch.build(role, (2,))
    layers = [m for m in critic.modules() if isinstance(m, nn.Linear)]
    assert len(layers) == 3 and all(hasattr(m, "parametrizations") for m in layers)
    x = torch.randn(8, 2 if role != "code_critic" else arch.z_dim)
    for _ in range(50):  # power iterations happen in training-mode forward passes
        critic(x)
    for layer in layers:
        assert torch.linalg.matrix_norm(layer.weight, ord=2).item() == pytest.approx(1, abs=1e-3)
    generator = arch.build("generator", (2,))
    assert not any(hasattr(m, "parametrizations") for m in generator.modules())


def test_spectral_norm_trains_and_resumes(tmp_path):
    """The power-iteration vectors live in the checkpoint; weights_only loading reads it."""
    overrides = ["model=wgan", "arch.spectral_norm=true", "train.steps=4", "train.batch_size=32",
                 "eval.n_samples=100", "eval.plot=false", "device=cpu", "train.lr_decay=none"]
    with initialize_config_dir(str(config_dir()), version_base="1.3"):
        assert train(compose("train", overrides=overrides), tmp_path, [])["status"] == "completed"
        resumed = compose("train", overrides=[*overrides[:2], "train.steps=6", *overrides[3:],
                                              f"resume={tmp_path}"])
        assert train(resumed, tmp_path, [])["steps"] == 6
    state = torch.load(tmp_path / "checkpoints/last.pt", weights_only=True)
    assert any(k.endswith("parametrizations.weight.original") for k in state["nets"])
    assert any(k.endswith("_u") for k in state["nets"])


def test_mmd_gan_kernel_choice():
    real, fake = torch.randn(16, 2), torch.randn(16, 2) + 1
    nets = nets_with(feature_critic=nn.Identity())
    rbf = MMDGAN(kernel="rbf", bandwidths=(1.0, 2.0))
    expected = mmd2_unbiased(real, fake, lambda a, b: rbf_kernel(a, b, (1.0, 2.0)))
    assert rbf.generator_loss(nets, real, fake).item() == pytest.approx(expected.item())
    with pytest.raises(IgmError, match="unknown model.kernel 'gauss'; choose from"):
        MMDGAN(kernel="gauss")


def test_toy_recipes_apply_by_data_kind():
    """recipe/<model>_points.yaml tunes a model for every set of points (a user's npy array
    too); images keep the paper's values; the command line wins over both."""
    with initialize_config_dir(str(config_dir()), version_base="1.3"):
        tuned = compose("train", overrides=["model=wgan_gp"])
        swiss = compose("train", overrides=["model=wgan_gp", "dataset=swissroll"])
        npy = compose("train", overrides=["model=wgan_gp", "dataset=npy", "dataset.path=x.npy"])
        paper = compose("train", overrides=["model=wgan_gp", "dataset=digits"])
        mine = compose("train", overrides=["model=wgan_gp", "model.lr=3e-4"])
        batch = compose("train", overrides=["model=mmd_gan", "dataset=npy"]).train.batch_size
    assert paper.model.lr == 1e-4 and list(paper.model.betas) == [0.0, 0.9]
    assert paper.model.gp_lambda == 10 and paper.model.n_critic == 5
    for points in (tuned, swiss, npy):
        assert (points.model.lr, points.model.gp_lambda, points.model.n_critic) == (1e-3, 1.0, 5)
    assert mine.model.lr == 3e-4 and mine.model.gp_lambda == 1.0
    assert batch == 64 and paper.train.batch_size == 256  # a recipe may set train.* too


def test_ratio_matching_gets_no_generator_gradient_from_total_variation():
    """Why ratio_matching refuses TV: f*(f'(r)) = r f'(r) - f(r) = sign(r - 1)/2, so the
    generator loss is constant in the generated points (the least-squares critic would train,
    but nothing moves the model)."""
    objective = RatioMatching("pearson")
    objective.f = get_divergence("total_variation")  # what the constructor now refuses
    nets = nets_with(critic=Fixed(lambda x: 2 * x[:, 0] - x[:, 1]))
    z = FAKE.clone().requires_grad_(True)
    objective.generator_loss(nets, REAL, z).backward()
    assert z.grad.abs().max() < 1e-7  # zero up to rounding (r and e^(log r) differ in the last bit)
    with pytest.raises(IgmError, match="model=fgan"):
        RatioMatching("total_variation")


# grid25's recipes (README, "grid25"): (batch size, steps) per model.
GRID25_RECIPES = {"gan": (512, 10000), "gan_minimax": (512, 10000), "fgan": (512, 10000),
                  "fgan_ratio": (512, 10000), "gmmn": (512, 10000), "ratio_matching": (512, 10000),
                  "wgan_gp": (512, 15000), "mmd_gan": (256, 10000), "alpha_gan": (512, 15000)}


@pytest.mark.parametrize("model", list(GRID25_RECIPES))
def test_grid25_recipe_gives_relu_networks(model):
    """grid25's recipes (README, "grid25"): ReLU networks, batch 512 (mmd_gan 256: its Gram
    matrices cost batch²), 10000 steps (wgan_gp 15000: hq 0.875-0.895 at 10000, 0.9 is its bar;
    alpha_gan 15000: hq 0.24 and 0.10 on seeds 1, 2 at 10000); other points and wgan (clipping,
    no grid25 recipe) keep LeakyReLU; the command line wins."""
    with initialize_config_dir(str(config_dir()), version_base="1.3"):
        grid = compose("train", overrides=[f"model={model}", "dataset=grid25"])
        ring = compose("train", overrides=[f"model={model}", "dataset=ring8"])
        mine = compose("train", overrides=[f"model={model}", "dataset=grid25",
                                           "arch.activation=leaky_relu"])
        other = compose("train", overrides=["model=wgan", "dataset=grid25"])
    batch, steps = GRID25_RECIPES[model]
    assert (grid.arch.activation, grid.train.batch_size, grid.train.steps) == ("relu", batch, steps)
    assert grid.train.recipe_steps == steps
    assert ring.arch.activation == "leaky_relu" and ring.train.batch_size < batch
    assert mine.arch.activation == "leaky_relu" and other.arch.activation == "leaky_relu"
    if model == "mmd_gan":  # Binkowski et al.'s kernel on grid25, the RBF mixture on other points
        assert (grid.model.kernel, ring.model.kernel) == ("rational_quadratic", "rbf")
        assert grid.model.lr == ring.model.lr == 1e-3
    if model == "alpha_gan":  # the GAN family's terms and Stacked Digits optimiser, λ 1 kept
        assert (grid.model.adversarial, ring.model.adversarial) == ("nonsaturating", "ratio")
        assert (list(grid.model.betas), grid.model.r1_gamma) == ([0.0, 0.99], 0.1)
        assert grid.model.lambda_rec == ring.model.lambda_rec == 1.0
    if model == "ratio_matching":  # the GAN family's R1 steadies it (unstable without)
        assert grid.model.r1_gamma == 1.0 and ring.model.r1_gamma == 0.0
    if model == "wgan_gp":  # on top of its points recipe
        assert (grid.model.lr, grid.model.gp_lambda, grid.model.n_critic) == (1e-3, 1.0, 5)
