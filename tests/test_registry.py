from pathlib import Path

import pytest
import torch

from igm_cli.build import make_optimizer, registries
from igm_cli.cli import config_dir
from igm_cli.errors import IgmError
from igm_cli.estimate import IPMS
from igm_cli.registry import MODELS, Registry


def test_registry_get_and_describe():
    reg = Registry("widget")

    @reg.register("round", "a round widget")
    def round_widget():
        return "round"

    @reg.register("square")
    class Square:
        """A square widget.

        More text that is not part of the description."""

    assert reg.get("round")() == "round"
    assert reg.get("square") is Square
    assert list(reg.describe()) == [("round", "a round widget"), ("square", "A square widget.")]
    with pytest.raises(ValueError, match="registered twice"):
        reg.register("round")(round_widget)


def test_unknown_name_lists_choices():
    with pytest.raises(IgmError) as err:
        MODELS.get("wgann")
    message = str(err.value)
    assert "'wgann'" in message and "gan, gan_minimax" in message
    assert "\n" not in message


@pytest.mark.parametrize("group", ["model", "dataset", "arch", "divergence"])
def test_config_groups_match_registries(group):
    """Each shipped config file names a registered builder, and every builder has a config."""
    files = sorted(Path(config_dir(), group).glob("*.yaml"))
    names = [f.stem for f in files]
    extra = list(IPMS) if group == "divergence" else []  # igm estimate's W1 and MMD
    assert names == sorted([*registries()[group].names(), *extra])
    for f in files:
        assert f"name: {f.stem}\n" in f.read_text()


def test_igm_list(igm):
    result = igm("list", check=True)
    for kind, registry in registries().items():
        assert f"{kind}s:" in result.stdout
        for name, description in registry.describe():
            assert description, f"{kind} {name} has no description"
            assert name in result.stdout and description in result.stdout


def test_version_and_help(igm):
    from igm_cli import __version__

    assert igm("--version", check=True).stdout.strip() == f"igm {__version__}"
    assert "train" in igm("--help", check=True).stdout
    helptext = igm("train", "--help", check=True).stdout
    for group in ("model", "dataset", "arch"):
        assert f"\n  {group}=  " in helptext
    assert "gan_minimax" in helptext and "ring8" in helptext


@pytest.mark.parametrize("dataset", ["ring8", "grid25", "npy", "digits", "stacked_digits"])
def test_every_model_composes_with_its_recipes(dataset):
    """Every model with every kind of data: the recipes that apply compose (a recipe file with
    a key twice, say, fails here and not in the middle of a sweep)."""
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(str(config_dir()), version_base="1.3"):
        for model in registries()["model"].names():
            cfg = compose("train", overrides=[f"model={model}", f"dataset={dataset}"])
            assert cfg.model.name == model and cfg.dataset.name == dataset


def test_adam_takes_integer_betas_as_typed_on_the_command_line():
    """`model.betas=[0,0.99]` (β1 = 0, StyleGAN2's setting, as a user types it) reaches the
    optimiser as an int and a float; torch's Adam refuses that mix ("betas must be either both
    floats or both Tensors"), so igm hands it floats."""
    params = [torch.nn.Parameter(torch.zeros(3))]
    adam = make_optimizer("adam", params, 1e-3, [0, 0.99])
    assert adam.param_groups[0]["betas"] == (0.0, 0.99)
    assert all(isinstance(b, float) for b in adam.param_groups[0]["betas"])
