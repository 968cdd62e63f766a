"""From a resolved config to the parts of a run: device, data, objective, networks, state.

One place builds optimisers, and one place wraps networks for speed and for several processes
(channels_last, torch.compile, DistributedDataParallel per role). Every name goes through a
registry, so a bad name fails with the list of choices; every value is checked (validate.py)
before the run folder exists.
"""

from __future__ import annotations

import inspect
import json
import os
from dataclasses import dataclass

import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

import igm_cli.nets  # noqa: F401  (registers the archs)
import igm_cli.objectives  # noqa: F401  (registers the models)
from igm_cli import parallel
from igm_cli.data import ToyDistribution, build_dataset, check_dataset
from igm_cli.errors import IgmError
from igm_cli.objectives import Objective
from igm_cli.registry import ARCHS, DIVERGENCES, MODELS
from igm_cli.state import TrainState
from igm_cli.validate import check_values

# Keys of the model group that configure the optimiser rather than the objective.
OPTIMISER_KEYS = ("name", "optimizer", "lr", "betas", "ema")
OPTIMIZERS = ("adam", "rmsprop")
LR_DECAYS = ("linear", "none")
DEVICES = ("auto", "cpu", "cuda", "cuda:N")


@dataclass
class Parts:
    device: torch.device
    dataset: ToyDistribution
    objective: Objective
    z_dim: int
    state: TrainState
    phase_nets: dict[str, nn.ModuleDict]  # per phase: the networks as that phase calls them
    channels_last: bool
    amp: str  # train.amp resolved (resolve_amp): off | bf16 | fp16, never auto


# ---------------------------------------------------------------------------- devices

def resolve_device(name: str) -> torch.device:
    """``auto`` (this rank's GPU when there is one), ``cpu``, ``cuda`` (this rank's GPU) or
    ``cuda:N``; a GPU that is not there is a one-line IgmError."""
    if name == "cpu":
        return torch.device("cpu")
    if name == "auto":
        if not torch.cuda.is_available():
            return torch.device("cpu")
        name = "cuda"
    if not isinstance(name, str) or not (name == "cuda" or name.startswith("cuda:")):
        raise IgmError(f"unknown device '{name}'; choose from: {', '.join(DEVICES)}")
    if not torch.cuda.is_available():
        raise IgmError(f"device '{name}' requested but no CUDA GPU is available; "
                       "choose from: auto, cpu")
    index = parallel.RANKS.local_rank if name == "cuda" else name.partition(":")[2]
    count = torch.cuda.device_count()
    if not str(index).isdigit() or int(index) >= count:
        raise IgmError(f"device '{name}' does not exist: this machine has {count} GPU(s), "
                       f"cuda:0 to cuda:{count - 1}")
    return torch.device("cuda", int(index))


def setup_device(name: str, threads: int, deterministic: bool = False) -> torch.device:
    """The device to run on; on the CPU, also the number of intra-op threads. ``deterministic``
    asks for reproducible kernels (cuDNN, cuBLAS workspace, deterministic algorithms), so that
    exact resume holds on GPUs too."""
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # before cuBLAS starts
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False
    device = resolve_device(name)
    if device.type == "cpu":
        torch.set_num_threads(threads)
    else:
        torch.cuda.set_device(device)
    return device


# ---------------------------------------------------------------------------- builders

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
    except (TypeError, ValueError) as exc:
        raise IgmError(f"model '{model_cfg.name}': {exc}") from None


def build_arch(arch_cfg: DictConfig, data_shape: tuple[int, ...]):
    """The arch's builder for data of ``data_shape`` ([D] points, [C, H, W] images): keys set
    to ``auto`` take the value the arch derives from the shape (``MLPArch.AUTO``)."""
    params = {k: v for k, v in OmegaConf.to_container(arch_cfg).items() if k != "name"}
    builder = ARCHS.get(arch_cfg.name)
    auto = getattr(builder, "AUTO", {})
    for key, value in params.items():
        if value == "auto":
            if key not in auto:
                raise IgmError(f"arch.{key}=auto: arch '{arch_cfg.name}' has no automatic "
                               f"{key}; give a number")
            params[key] = auto[key](tuple(data_shape))
    try:
        return builder(**params)
    except (TypeError, ValueError) as exc:
        raise IgmError(f"arch '{arch_cfg.name}': {exc}") from None


def make_optimizer(kind: str, params, lr: float, betas) -> torch.optim.Optimizer:
    """Adam is ``fused``: one kernel per parameter for the whole update, on the CPU as on a GPU
    (torch's CPU default runs ~10 small ops per parameter): 0.5-1 ms less per step of the toy
    recipe. It computes the same update in another order, so weights differ from the
    for-loop or ``foreach`` Adam by round-off. RMSprop has no fused kernel: ``foreach``. Betas
    are made floats: `model.betas=[0,0.99]` gives an int beside a float, which torch refuses."""
    if kind == "adam":
        return torch.optim.Adam(params, lr=lr, betas=tuple(float(b) for b in betas), fused=True)
    if kind == "rmsprop":
        return torch.optim.RMSprop(params, lr=lr, foreach=True)
    raise IgmError(f"unknown model.optimizer '{kind}'; choose from: {', '.join(OPTIMIZERS)}")


def registries() -> dict:
    """Every registry a config group refers to, for `igm list`."""
    import igm_cli.divergences  # noqa: F401  (registers the divergences)
    from igm_cli.registry import DATASETS

    return {"model": MODELS, "dataset": DATASETS, "arch": ARCHS, "divergence": DIVERGENCES}


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


# ---------------------------------------------------------------------------- checks

@dataclass
class Checked:
    """What the checks built (cheap parts), reused by ``build`` in the same process."""

    objective: Objective
    arch: object
    data_shape: tuple[int, ...]
    is_image: bool
    has_modes: bool


_CHECKED: dict[str, Checked] = {}


def config_key(cfg: DictConfig) -> str:
    return json.dumps(OmegaConf.to_container(cfg, resolve=True), sort_keys=True, default=str)


def check_config(cfg: DictConfig) -> Checked:
    """Every check that needs no training; each failure is a one-line IgmError. Runs once per
    config and process: the run itself reuses what the check built."""
    key = config_key(cfg)
    if key in _CHECKED:
        return _CHECKED[key]
    check_values(cfg)
    device = resolve_device(cfg.device)
    objective = build_objective(cfg)
    shape, is_image, has_modes = check_dataset(cfg.dataset)
    arch = build_arch(cfg.arch, shape)
    networks = {role: arch.build(role, shape) for role in objective.networks}
    for phase in objective.phases():  # the optimisers, on the real parameters (bad lr, betas)
        params = [p for role in phase.trains for p in networks[role].parameters()]
        try:
            make_optimizer(cfg.model.optimizer, params, cfg.model.lr, cfg.model.betas)
        except ValueError as exc:
            raise IgmError(f"model.optimizer={cfg.model.optimizer}: {exc}") from None
    check_speed(cfg, device, objective)
    check_image_metrics(cfg, is_image)
    check_distributed(cfg, device)
    from igm_cli.evaluate import check_metric_keys

    check_metric_keys(cfg, objective, is_image, has_modes)
    _CHECKED[key] = Checked(objective, arch, shape, is_image, has_modes)
    return _CHECKED[key]


def check_image_metrics(cfg: DictConfig, is_image: bool) -> None:
    """eval.metrics and eval.features name known metrics and extractors (image data only)."""
    if not is_image:
        return
    from igm_cli.metrics.images import FEATURES, check_metric_names

    check_metric_names(cfg.eval.get("metrics") or [])
    FEATURES.get(cfg.eval.get("features", "inception"))


def has_gradient_penalty(objective: Objective) -> bool:
    return any(getattr(objective, k, 0) > 0 for k in ("r1_gamma", "gp_lambda"))


def check_speed(cfg: DictConfig, device: torch.device, objective: Objective) -> None:
    """train.amp, train.compile, train.channels_last (their values are checked in validate)."""
    amp = cfg.train.get("amp", "off")
    if amp == "fp16" and device.type != "cuda":
        raise IgmError("train.amp=fp16 needs a CUDA GPU; on the CPU use train.amp=bf16 or off")
    if amp == "fp16" and has_gradient_penalty(objective):
        raise IgmError(f"train.amp=fp16 with a gradient penalty (model {cfg.model.name}): input "
                       "gradients below ~1e-6 underflow in float16 and the penalty silently "
                       "vanishes; use train.amp=bf16 (float32's range) or turn the penalty off")


def check_distributed(cfg: DictConfig, device: torch.device) -> None:
    world = parallel.RANKS.world_size if parallel.RANKS.distributed else cfg.train.get("devices", 1)
    if cfg.train.batch_size % world:
        raise IgmError(f"train.batch_size={cfg.train.batch_size} is the global batch and must be "
                       f"divisible by the {world} processes")
    if cfg.train.get("sync_batchnorm", False) and device.type != "cuda":
        raise IgmError("train.sync_batchnorm=true needs CUDA GPUs (SyncBatchNorm does not run on "
                       "the CPU); on CPUs each process normalises over its own rows")


# ---------------------------------------------------------------------------- the run's parts

def native_bf16(device: torch.device) -> bool:
    """Whether ``device`` multiplies bfloat16 in hardware: a CUDA GPU that supports it, or a CPU
    with AVX512-BF16 or AMX. Elsewhere bf16 autocast converts in software and can be slower."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    checks = [getattr(torch.cpu, name, None)  # torch's own CPU-feature probes (private names)
              for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")]
    return any(check() for check in checks if check is not None)


def resolve_amp(setting: str, device: torch.device) -> str:
    """``train.amp``: auto = bf16 where ``device`` computes it natively, else off."""
    if setting == "auto":
        return "bf16" if native_bf16(device) else "off"
    return setting


def use_channels_last(setting, device: torch.device, images: bool) -> bool:
    """``train.channels_last``: auto = on for image data on a GPU."""
    if str(setting) == "auto":
        return images and device.type == "cuda"
    return bool(setting) and images


def build(cfg: DictConfig) -> Parts:
    checked = check_config(cfg)
    train = cfg.train
    device = setup_device(cfg.device, train.threads, train.get("deterministic", False))
    parallel.init_process_group(device)
    dataset = build_dataset(cfg.dataset, device)
    channels_last = use_channels_last(train.channels_last, device, dataset.is_image)
    amp = resolve_amp(train.get("amp", "off"), device)
    state = build_state(cfg, checked, tuple(dataset.shape), device, channels_last, amp)
    phase_nets = wrap_networks(state.nets, checked.objective, device, train.compile)
    return Parts(device, dataset, checked.objective, checked.arch.z_dim, state, phase_nets,
                 channels_last, amp)


def build_state(cfg: DictConfig, checked: Checked, data_shape: tuple[int, ...],
                device: torch.device, channels_last: bool = False,
                amp: str = "off") -> TrainState:
    """Networks (initialised from ``seed``, the same on every rank), optimisers, EMA, scalers
    and RNG streams, on ``device``."""
    objective, arch = checked.objective, checked.arch
    torch.manual_seed(cfg.seed)  # network initialisation
    nets = nn.ModuleDict({role: arch.build(role, data_shape) for role in objective.networks})
    if cfg.train.get("sync_batchnorm", False) and parallel.RANKS.distributed:
        nets = nn.SyncBatchNorm.convert_sync_batchnorm(nets)
    nets.to(device)
    if channels_last:  # before the optimisers and the EMA copy exist (their state follows)
        nets.to(memory_format=torch.channels_last)
    model = cfg.model
    optimizers, base_lrs = {}, {}
    for phase in objective.phases():
        params = [p for role in phase.trains for p in nets[role].parameters()]
        optimizers[phase.name] = make_optimizer(model.optimizer, params, model.lr, model.betas)
        base_lrs[phase.name] = model.lr
    return TrainState(nets, optimizers, base_lrs, model.ema, arch.z_dim, cfg.seed, device, amp)


def wrap_networks(nets: nn.ModuleDict, objective: Objective, device: torch.device,
                  compile_: bool) -> dict[str, nn.ModuleDict]:
    """Each phase's view of the networks: ``torch.compile`` (generators and encoders; critics
    stay eager, their penalties need double backward, which compiled graphs refuse), and with
    several processes a DistributedDataParallel wrapper for the roles the phase trains (a role
    the phase does not train is called unwrapped, so DDP never waits for gradients it will not
    get). Every view shares its parameters with ``nets``, which stays the one thing saved."""
    def fast(role: str, net: nn.Module) -> nn.Module:
        return torch.compile(net) if compile_ and not role.endswith("critic") else net

    plain = {role: fast(role, net) for role, net in nets.items()}
    # a list in phase order, not a set: every rank must wrap the same networks in the same
    # order (DDP's constructor checks the parameters across ranks)
    trained = list(dict.fromkeys(role for phase in objective.phases() for role in phase.trains))
    ddp = {role: fast(role, nn.parallel.DistributedDataParallel(
               nets[role], device_ids=[device.index] if device.type == "cuda" else None))
           for role in trained} if parallel.RANKS.distributed else {}
    return {phase.name: nn.ModuleDict({role: ddp[role] if role in phase.trains and ddp
                                       else plain[role] for role in nets})
            for phase in objective.phases()}


def describe_params(nets: nn.ModuleDict) -> str:
    """"generator 33.8k, critic 33.4k" parameters per role."""
    def short(n: int) -> str:
        return f"{n / 1e6:.2f}M" if n >= 1e6 else f"{n / 1e3:.1f}k"

    return ", ".join(f"{role} {short(sum(p.numel() for p in net.parameters()))}"
                     for role, net in nets.items())

