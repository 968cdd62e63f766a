"""Load a run's generator from its checkpoint, outside the trainer (`igm sample`)."""

from __future__ import annotations

from omegaconf import OmegaConf

from igm_cli.build import build_arch, build_objective, resolve_device
from igm_cli.checkpoint import load_checkpoint
from igm_cli.generate import generate


def load_sampler(run: str, device_name: str = "cpu", checkpoint: dict | None = None):
    """Returns ``sample(n, seed) -> Tensor [n, *data shape]`` from the EMA generator when the
    run kept one, else from the generator."""
    generator, z_dim, device = load_generator(run, device_name, checkpoint)
    return lambda n, seed: generate(generator, n, z_dim, seed, device)


def load_generator(run: str, device_name: str = "cpu", checkpoint: dict | None = None):
    """(generator module in eval mode, z_dim, device) from a run's checkpoint (``checkpoint``
    when the caller has loaded it already): the EMA weights when the run kept them."""
    checkpoint = checkpoint or load_checkpoint(run)
    cfg = OmegaConf.create(checkpoint["config"])
    device = resolve_device(device_name)
    shape = tuple(checkpoint["data_shape"])
    arch = build_arch(cfg.arch, shape)
    build_objective(cfg)  # the model must still be registered
    generator = arch.build("generator", shape)
    if checkpoint.get("ema") is not None:
        generator.load_state_dict(checkpoint["ema"])
    else:
        prefix = "generator."
        generator.load_state_dict({k[len(prefix):]: v for k, v in checkpoint["nets"].items()
                                   if k.startswith(prefix)})
    generator.to(device).eval()
    return generator, arch.z_dim, device


def load_reconstructor(run: str, device_name: str = "cpu"):
    """``reconstruct(n) -> (x, G(E(x)))`` for the first n held-out inputs of the run's data set
    (toy sets: n fresh points with the evaluation's fixed seed), from the trained encoder and
    generator (not the EMA: the encoder was trained with this generator)."""
    import torch

    from igm_cli.data import build_dataset
    from igm_cli.errors import IgmError
    from igm_cli.generate import heldout_points

    checkpoint = load_checkpoint(run)
    cfg = OmegaConf.create(checkpoint["config"])
    device = resolve_device(device_name)
    objective = build_objective(cfg)
    if "encoder" not in objective.networks:
        raise IgmError(f"model '{cfg.model.name}' has no encoder, so nothing to reconstruct; "
                       f"models with one: alpha_gan")
    shape = tuple(checkpoint["data_shape"])
    arch = build_arch(cfg.arch, shape)
    nets = torch.nn.ModuleDict({role: arch.build(role, shape) for role in objective.networks})
    nets.load_state_dict(checkpoint["nets"])
    nets.to(device).eval()
    dataset = build_dataset(cfg.dataset, device)

    def reconstruct(n: int):
        x = heldout_points(dataset, n, device)
        return x, objective.reconstruct(nets, x)

    return reconstruct
