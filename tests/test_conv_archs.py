"""The convolutional archs (dcgan, resnet): shapes, gradients, spectral norm, no batch norm in
critics, one-line errors, and building from the shipped YAML."""

import inspect
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from torch import nn
from torch.nn.utils import parametrize

import igm_cli.nets.conv  # noqa: F401  (registers dcgan and resnet)
from igm_cli.errors import IgmError
from igm_cli.nets.mlp import MLPArch
from igm_cli.registry import ARCHS

ARCHS_UNDER_TEST = ["dcgan", "resnet"]
ROLES = ["generator", "critic", "feature_critic", "encoder", "code_critic"]
CRITIC_ROLES = ["critic", "feature_critic", "code_critic"]
# Narrow networks keep every test well under a second on one CPU core.
SMALL = dict(z_dim=16, channels=8, features=5, code_hidden=32, code_depth=2)
CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "arch"
LAYERS = (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)


def make(name: str, **keys):
    return ARCHS.get(name)(**{**SMALL, **keys})


def inputs(arch, role: str, c: int, size: int, batch: int = 2) -> torch.Tensor:
    if role in ("generator", "code_critic"):
        return torch.randn(batch, arch.z_dim)
    return torch.rand(batch, c, size, size) * 2 - 1


def expected_shape(arch, role: str, c: int, size: int, batch: int = 2) -> tuple[int, ...]:
    return {"generator": (batch, c, size, size), "critic": (batch,), "code_critic": (batch,),
            "feature_critic": (batch, arch.features), "encoder": (batch, arch.z_dim)}[role]


def layers(net: nn.Module) -> list[nn.Module]:
    return [m for m in net.modules() if isinstance(m, LAYERS)]


def has_spectral_norm(layer: nn.Module) -> bool:
    return parametrize.is_parametrized(layer, "weight") and any(
        type(p).__name__ == "_SpectralNorm" for p in layer.parametrizations.weight)


@pytest.mark.parametrize("c", [1, 3])
@pytest.mark.parametrize("name, size", [("dcgan", 8), ("dcgan", 32), ("dcgan", 64),
                                        ("resnet", 32), ("resnet", 64)])
@pytest.mark.parametrize("role", ROLES)
def test_shapes_range_and_gradients(name, role, size, c):
    torch.manual_seed(0)
    arch = make(name)
    net = arch.build(role, (c, size, size))
    out = net(inputs(arch, role, c, size))
    assert tuple(out.shape) == expected_shape(arch, role, c, size)
    assert torch.isfinite(out).all()
    if role == "generator":
        assert out.abs().max() <= 1
    (out * torch.randn_like(out)).sum().backward()
    for pname, p in net.named_parameters():
        assert p.grad is not None, f"{pname} has no gradient"
        assert torch.isfinite(p.grad).all(), f"{pname} has a non-finite gradient"


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("name", ARCHS_UNDER_TEST)
def test_spectral_norm_on_critic_roles_only(name, role):
    torch.manual_seed(0)
    arch = make(name, spectral_norm=True)
    net = arch.build(role, (3, 32, 32))
    if not role.endswith("critic"):  # generator, encoder
        assert not any(parametrize.is_parametrized(m) for m in net.modules())
        return
    assert layers(net) and all(has_spectral_norm(m) for m in layers(net))
    net.train()
    x = inputs(arch, role, 3, 32)
    with torch.no_grad():
        for _ in range(30):  # one power iteration per training-mode forward pass
            net(x)
    for m in layers(net):
        weight = m.weight.detach()
        top = torch.linalg.matrix_norm(weight.reshape(weight.shape[0], -1), ord=2).item()
        assert 0.999 < top < 1.05, f"{m}: top singular value {top}"


@pytest.mark.parametrize("critic_norm", ["none", "layer"])
@pytest.mark.parametrize("name", ARCHS_UNDER_TEST)
def test_no_batch_norm_in_critics_or_encoder(name, critic_norm):
    arch = make(name, critic_norm=critic_norm)
    for role in ["encoder", *CRITIC_ROLES]:
        net = arch.build(role, (3, 32, 32))
        assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in net.modules())
        group_norms = [m for m in net.modules() if isinstance(m, nn.GroupNorm)]
        if critic_norm == "layer" and role != "code_critic":
            assert group_norms and all(m.num_groups == 1 for m in group_norms)
        else:
            assert not group_norms
    generator = arch.build("generator", (3, 32, 32))
    assert any(isinstance(m, nn.BatchNorm2d) for m in generator.modules())


@pytest.mark.parametrize("name", ARCHS_UNDER_TEST)
def test_gradient_penalty_double_backward(name):
    """WGAN-GP differentiates the critic's input gradient; layer norm keeps it per-sample."""
    torch.manual_seed(0)
    arch = make(name, critic_norm="layer")
    critic = arch.build("critic", (3, 32, 32))
    x = inputs(arch, "critic", 3, 32, batch=3).requires_grad_(True)
    (grad,) = torch.autograd.grad(critic(x)[0], x, create_graph=True)
    assert grad[1:].abs().max() == 0  # sample 0's score ignores samples 1 and 2
    (grad.flatten(1).norm(dim=1) - 1).pow(2).mean().backward()
    assert all(torch.isfinite(p.grad).all() for p in critic.parameters() if p.grad is not None)


@pytest.mark.parametrize("shape", [(1, 28, 28), (3, 48, 32), (3, 32, 48), (3, 48, 48),
                                   (3, 128, 128), (2,), (32, 32)])
@pytest.mark.parametrize("name", ARCHS_UNDER_TEST)
def test_unsupported_shape_is_one_line_error(name, shape):
    arch = make(name)
    for role in ROLES:
        with pytest.raises(IgmError) as err:
            arch.build(role, shape)
        message = str(err.value)
        assert "\n" not in message
        assert str(shape) in message and name in message
        assert ("8, 32 or 64" if name == "dcgan" else "32 or 64") in message


def test_dcgan_at_8px_keeps_two_stride_2_layers():
    """Stacked Digits' native 8 px: the generator grows a 2x2 map twice (DCGAN's 4x4 stem
    would leave one layer), the critic halves twice to 2x2."""
    arch = make("dcgan")
    generator, critic = arch.build("generator", (3, 8, 8)), arch.build("critic", (3, 8, 8))
    assert sum(isinstance(m, nn.ConvTranspose2d) for m in generator.modules()) == 2
    assert [m.stride for m in critic.modules() if isinstance(m, nn.Conv2d)] == [(2, 2)] * 2
    assert generator[1].shape == (2 * arch.channels, 2, 2)


@pytest.mark.parametrize("name", ARCHS_UNDER_TEST)
def test_unknown_role_and_bad_keys(name):
    arch = make(name)
    with pytest.raises(IgmError, match="'discriminator'.*choose from: generator"):
        arch.build("discriminator", (3, 32, 32))
    with pytest.raises(IgmError, match="critic_norm 'batch'.*none, layer"):
        make(name, critic_norm="batch")
    with pytest.raises(IgmError, match="arch.channels must be an integer >= 1"):
        make(name, channels=0)
    with pytest.raises(IgmError, match="arch.spectral_norm"):
        make(name, spectral_norm="yes")


@pytest.mark.parametrize("name", ARCHS_UNDER_TEST)
def test_registry_builds_from_yaml(name):
    cfg = OmegaConf.load(CONFIGS / f"{name}.yaml")
    assert cfg.name == name
    keys = {k: v for k, v in OmegaConf.to_container(cfg).items() if k != "name"}
    builder = ARCHS.get(name)
    defaults = {k: p.default for k, p in inspect.signature(builder).parameters.items()}
    assert keys == defaults  # every constructor key, with its default
    arch = builder(**keys)
    assert arch.z_dim == keys["z_dim"]
    torch.manual_seed(0)
    generator, critic = arch.build("generator", (3, 32, 32)), arch.build("critic", (3, 32, 32))
    images = generator(torch.randn(2, arch.z_dim))
    assert images.shape == (2, 3, 32, 32) and critic(images).shape == (2,)


# Parameter counts at 32 px, 3 channels, default keys (code critic: 750 x 3 MLP on z_dim 128).
EXPECTED_PARAMS = {
    "dcgan": {"generator": (1.0e6, 1.4e6), "critic": (0.55e6, 0.8e6),
              "feature_critic": (0.6e6, 0.85e6), "encoder": (1.0e6, 1.4e6),
              "code_critic": (1.1e6, 1.35e6)},
    "resnet": {"generator": (1.1e6, 1.3e6), "critic": (0.95e6, 1.15e6),
               "feature_critic": (0.95e6, 1.15e6), "encoder": (0.95e6, 1.15e6),
               "code_critic": (1.1e6, 1.35e6)},
}


@pytest.mark.parametrize("name", ARCHS_UNDER_TEST)
def test_parameter_counts(name):
    arch = ARCHS.get(name)()
    for role, (low, high) in EXPECTED_PARAMS[name].items():
        count = sum(p.numel() for p in arch.build(role, (3, 32, 32)).parameters())
        print(f"{name} {role}: {count:,} parameters")
        assert low <= count <= high, f"{name} {role}: {count:,} parameters"


@pytest.mark.parametrize("shape, z_dim, hidden", [
    ((1,), 2, 128), ((2,), 2, 128), ((5,), 5, 128),  # points: max(2, D)-D noise
    ((3, 8, 8), 64, 512), ((1, 32, 32), 64, 512),    # flattened images
])
def test_mlp_auto_follows_the_data(shape, z_dim, hidden):
    """The shipped mlp.yaml's ``auto`` noise and width, resolved from the data's shape: a
    generator of 2-D noise cannot cover a 4-D shell (README, "Robustness")."""
    from igm_cli.build import build_arch

    arch = build_arch(OmegaConf.load(CONFIGS / "mlp.yaml"), shape)
    assert (arch.z_dim, arch.hidden) == (z_dim, hidden)
    generator = arch.build("generator", shape)
    assert generator(torch.randn(3, z_dim)).shape == (3, *shape)


def test_mlp_critics_take_their_own_width():
    """arch.critic_hidden widens (or narrows) every critic role and nothing else; null keeps
    arch.hidden for all."""
    from igm_cli.build import build_arch

    def widths(net):
        return [m.out_features for m in net.modules() if isinstance(m, torch.nn.Linear)]

    shape = (3, 8, 8)
    both = build_arch(OmegaConf.load(CONFIGS / "mlp.yaml"), shape)
    assert widths(both.build("critic", shape)) == [512, 512, 512, 1]
    split = build_arch(OmegaConf.merge(OmegaConf.load(CONFIGS / "mlp.yaml"),
                                       {"hidden": 96, "critic_hidden": 40}), shape)
    assert widths(split.build("generator", shape)) == [96, 96, 96, 192]
    assert widths(split.build("encoder", shape)) == [96, 96, 96, 64]
    for role, out in (("critic", 1), ("code_critic", 1), ("feature_critic", 16)):
        assert widths(split.build(role, shape)) == [40, 40, 40, out], role


def test_mlp_generator_of_images_stays_in_the_pixel_range():
    """Images live in [-1, 1] (conv generators end in tanh): so does the MLP's image, even
    for noise far out in the tails; points keep an unbounded output."""
    torch.manual_seed(0)
    images = MLPArch(z_dim=4, hidden=16).build("generator", (3, 8, 8))
    points = MLPArch(z_dim=2, hidden=16).build("generator", (2,))
    for layer in [*images.modules(), *points.modules()]:
        if isinstance(layer, torch.nn.Linear):
            torch.nn.init.constant_(layer.bias, 3.0)  # push every output far from zero
    assert images(100 * torch.randn(64, 4)).abs().max() <= 1
    assert points(100 * torch.randn(64, 2)).abs().max() > 1


def test_auto_where_the_arch_derives_nothing_is_refused():
    from igm_cli.build import build_arch

    cfg = OmegaConf.merge(OmegaConf.load(CONFIGS / "dcgan.yaml"), {"z_dim": "auto"})
    with pytest.raises(IgmError, match="arch 'dcgan' has no automatic z_dim; give a number"):
        build_arch(cfg, (3, 32, 32))
    gaussian = build_arch(OmegaConf.load(CONFIGS / "gaussian_affine.yaml"), (3,))
    assert gaussian.z_dim == 3  # the affine generator's noise is the data's dimension
