"""From a resolved config to the parts of a run: device, data, objective, networks, state.

One place builds optimisers. Every name goes through a registry, so a bad name fails with the
list of choices.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass

import torch
from omegaconf import DictConfig, OmegaConf

import igm_cli.nets  # noqa: F401  (registers the archs)
import igm_cli.objectives  # noqa: F401  (registers the models)
from igm_cli.data import ToyDistribution, build_dataset, check_dataset
from igm_cli.errors import IgmError
from igm_cli.objectives import Objective
from igm_cli.registry import ARCHS, DIVERGENCES, MODELS
from igm_cli.state import TrainState

# Keys of the model group that configure the optimiser rather than the objective.
OPTIMISER_KEYS = ("name", "optimizer", "lr", "betas", "ema")
OPTIMIZERS = ("adam", "rmsprop")


@dataclass
class Parts:
    device: torch.device
    dataset: ToyDistribution
    objective: Objective
    z_dim: int
    state: TrainState


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cpu":
        return torch.device("cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise IgmError(f"device '{name}' requested but no CUDA GPU is available; "
                           "choose from: auto, cpu")
        return torch.device(name)
    raise IgmError(f"unknown device '{name}'; choose from: auto, cpu, cuda")


def build_objective(cfg: DictConfig) -> Objective:
    """The model's objective. Models that minimise an f-divergence get the `divergence` group,
    unless their own config names one (ratio_matching's ``model.divergence``)."""
    model_cfg = cfg.model
    params = {k: v for k, v in OmegaConf.to_container(model_cfg).items() if k not in OPTIMISER_KEYS}
    builder = MODELS.get(model_cfg.name)
    if ("divergence" in inspect.signature(builder).parameters and "divergence" in cfg
            and "divergence" not in params):
        if cfg.divergence.name not in DIVERGENCES:  # e.g. wasserstein, mmd: igm estimate only
            raise IgmError(f"model {model_cfg.name} takes an f-divergence, got divergence="
                           f"{cfg.divergence.name}; choose from: {', '.join(DIVERGENCES.names())}")
        params["divergence"] = cfg.divergence.name
    try:
        return builder(**params)
    except TypeError as exc:
        raise IgmError(f"model '{model_cfg.name}': {exc}") from None


def build_arch(arch_cfg: DictConfig):
    params = {k: v for k, v in OmegaConf.to_container(arch_cfg).items() if k != "name"}
    builder = ARCHS.get(arch_cfg.name)
    try:
        return builder(**params)
    except TypeError as exc:
        raise IgmError(f"arch '{arch_cfg.name}': {exc}") from None


def make_optimizer(kind: str, params, lr: float, betas) -> torch.optim.Optimizer:
    if kind == "adam":
        return torch.optim.Adam(params, lr=lr, betas=tuple(betas))
    if kind == "rmsprop":
        return torch.optim.RMSprop(params, lr=lr)
    raise IgmError(f"unknown model.optimizer '{kind}'; choose from: {', '.join(OPTIMIZERS)}")


def registries() -> dict:
    """Every registry a config group refers to, for `igm list`."""
    import igm_cli.divergences  # noqa: F401  (registers the divergences)
    from igm_cli.registry import DATASETS

    return {"model": MODELS, "dataset": DATASETS, "arch": ARCHS, "divergence": DIVERGENCES}


LR_DECAYS = ("linear", "none")


def check_positive_ints(cfg: DictConfig, keys) -> None:
    for key in keys:
        value = OmegaConf.select(cfg, key)
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise IgmError(f"{key} must be an integer >= 1, got {value!r}")


def check_lr_decay(name: str) -> None:
    if name not in LR_DECAYS:
        raise IgmError(f"unknown train.lr_decay '{name}'; choose from: {', '.join(LR_DECAYS)}")


def lr_factor(decay: str, step: int, total: int) -> float:
    """Multiplier of the base learning rate at ``step``: linear to 0 at ``total``, or 1."""
    return 1 - step / total if decay == "linear" else 1.0


def setup_device(name: str, threads: int) -> torch.device:
    """The device to run on; on the CPU, also the number of intra-op threads."""
    device = resolve_device(name)
    if device.type == "cpu":
        torch.set_num_threads(threads)
    return device


def check_config(cfg: DictConfig) -> None:
    """Every check that needs no training; each failure is a one-line IgmError."""
    check_positive_ints(cfg, ("train.steps", "train.batch_size", "train.threads", "eval.every",
                              "eval.n_samples", "ckpt.every"))
    check_lr_decay(cfg.train.lr_decay)
    resolve_device(cfg.device)
    build_objective(cfg)
    build_arch(cfg.arch)
    check_dataset(cfg.dataset)
    check_speed(cfg)
    check_image_metrics(cfg)


def check_image_metrics(cfg: DictConfig) -> None:
    """eval.metrics and eval.features name known metrics and extractors (image data only)."""
    from igm_cli.data.images import IMAGE_SETS

    if cfg.dataset.name not in IMAGE_SETS:
        return
    from igm_cli.metrics.images import FEATURES, check_metric_names

    check_metric_names(cfg.eval.get("metrics") or [])
    FEATURES.get(cfg.eval.get("features", "inception"))


def check_speed(cfg: DictConfig) -> None:
    """train.amp, train.compile, train.channels_last."""
    amp = cfg.train.get("amp", "off")
    if amp not in ("off", "bf16", "fp16"):
        raise IgmError(f"unknown train.amp '{amp}'; choose from: off, bf16, fp16")
    if amp == "fp16" and resolve_device(cfg.device).type != "cuda":
        raise IgmError("train.amp=fp16 needs a CUDA GPU; on the CPU use train.amp=bf16 or off")
    if not isinstance(cfg.train.get("compile", False), bool):
        raise IgmError(f"train.compile must be true or false, got {cfg.train.compile!r}")
    if str(cfg.train.get("channels_last", "auto")) not in ("auto", "True", "False"):
        raise IgmError(f"train.channels_last must be auto, true or false, "
                       f"got {cfg.train.channels_last!r}")


def build(cfg: DictConfig) -> Parts:
    check_config(cfg)
    device = setup_device(cfg.device, cfg.train.threads)
    dataset = build_dataset(cfg.dataset, device)
    objective = build_objective(cfg)
    arch = build_arch(cfg.arch)
    torch.manual_seed(cfg.seed)  # network initialisation
    nets = torch.nn.ModuleDict(
        {role: arch.build(role, tuple(dataset.shape)) for role in objective.networks}
    ).to(device)
    model = cfg.model
    optimizers, base_lrs = {}, {}
    for phase in objective.phases():
        params = [p for role in phase.trains for p in nets[role].parameters()]
        optimizers[phase.name] = make_optimizer(model.optimizer, params, model.lr, model.betas)
        base_lrs[phase.name] = model.lr
    state = TrainState(nets, optimizers, base_lrs, model.ema, cfg.seed, device)
    return Parts(device, dataset, objective, arch.z_dim, state)
