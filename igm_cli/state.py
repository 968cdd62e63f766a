"""The trainer's whole state in one object: networks, EMA, optimisers, gradient scalers, RNG
streams, step.

``state_dict()`` is everything a resume needs, so N steps + resume gives the same weights as
one unbroken run. The networks sit in one ``nn.ModuleDict`` (``nets.generator``,
``nets.critic``, ...) so that a DDP wrapper or a ``torch.func`` replica sees one module.
Checkpoints hold CPU tensors only, so they load on a machine without the GPU they came from.
"""

from __future__ import annotations

import copy
import warnings

import torch
from torch import nn

from igm_cli.generate import EVAL_SEED, fixed_noise

BN_CALIBRATION = 1024  # noise samples that give the EMA generator its batch-norm statistics


class GeneratorEMA:
    """An exponential moving average of the generator's weights, used for evaluation and
    sampling: θ_ema <- d_t θ_ema + (1 - d_t) θ with d_t = min(β, (1 + t)/(10 + t)).

    The warm-up (TensorFlow's ``ExponentialMovingAverage(num_updates=t)``) averages over about
    the last t/9 steps early on, so the average never carries much of the random initial weights
    (with a constant β = 0.999 they keep a share 0.999^t: 37 % at step 1000); β takes over at
    t ≈ 9β/(1 - β) (9000 steps for 0.999).

    Batch norm: the average's weights are not the online generator's, so its running statistics
    must be its own; ``calibrated()`` recomputes them from its outputs on fixed noise (cumulative
    averages in training mode) whenever the weights moved since the last time.
    """

    def __init__(self, generator: nn.Module, beta: float, z_dim: int):
        self.beta, self.z_dim = beta, z_dim
        self.module = copy.deepcopy(generator).requires_grad_(False)
        self.norms = [m for m in self.module.modules()
                      if isinstance(m, nn.modules.batchnorm._BatchNorm)]
        self.stale = bool(self.norms)
        self.pairs = (list(self.module.parameters()),  # listed once: the update runs every step
                      [p.detach() for p in generator.parameters()])

    def decay(self, t: int) -> float:
        return min(self.beta, (1 + t) / (10 + t))

    @torch.no_grad()
    def update(self, t: int) -> None:
        """Average in the generator's weights after update number t (t = 0, 1, ...)."""
        ema_params, params = self.pairs
        torch._foreach_lerp_(ema_params, params, 1 - self.decay(t))  # ema += (1-d)(p - ema)
        self.stale = bool(self.norms)

    @torch.no_grad()
    def calibrated(self) -> nn.Module:
        """The averaged generator with batch-norm statistics of its own outputs."""
        if self.stale:
            device = next(self.module.parameters()).device
            momenta = [m.momentum for m in self.norms]
            for m in self.norms:
                m.reset_running_stats()
                m.momentum = None  # cumulative average over the calibration batches
            was_training = self.module.training
            self.module.train()
            for z in fixed_noise(BN_CALIBRATION, self.z_dim, EVAL_SEED + 3, device).split(256):
                self.module(z)
            self.module.train(was_training)
            for m, momentum in zip(self.norms, momenta):
                m.momentum = momentum
            self.stale = False
        return self.module

    def state_dict(self) -> dict:
        return self.calibrated().state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.module.load_state_dict(state)
        self.stale = False


class TrainState:
    def __init__(
        self,
        nets: nn.ModuleDict,
        optimizers: dict[str, torch.optim.Optimizer],
        base_lrs: dict[str, float],
        ema_decay: float,
        z_dim: int,
        seed: int,
        device: torch.device,
        amp: str = "off",
    ):
        self.nets = nets
        self.optimizers = optimizers
        self.base_lrs = base_lrs
        self.seed, self.device = seed, device
        self.ema = GeneratorEMA(nets.generator, ema_decay, z_dim) if ema_decay else None
        self.step = 0
        # One scaler per optimiser, enabled for fp16 only (a disabled scaler passes the loss
        # and the optimiser step through), so there is one code path for every precision.
        with warnings.catch_warnings():  # "GradScaler is enabled, but CUDA is not available"
            warnings.simplefilter("ignore")
            self.scalers = {name: torch.amp.GradScaler(device.type, enabled=amp == "fp16")
                            for name in optimizers}
        # Separate streams, so that e.g. changing n_critic does not shift the data sequence
        # of an evaluation, and each can be saved and restored exactly.
        self.data_rng = torch.Generator(device).manual_seed(seed)
        self.noise_rng = torch.Generator(device).manual_seed(seed + 1)
        torch.manual_seed(seed + 2)  # anything an objective draws itself (e.g. penalty mixing)

    @property
    def sampler(self) -> nn.Module:
        """The generator to evaluate and sample from: the EMA copy when there is one."""
        return self.ema.calibrated() if self.ema is not None else self.nets.generator

    def update_ema(self) -> None:
        """After the generator's update number ``self.step``."""
        if self.ema is not None:
            self.ema.update(self.step)

    def set_lr(self, factor: float) -> None:
        for name, opt in self.optimizers.items():
            for group in opt.param_groups:
                group["lr"] = self.base_lrs[name] * factor

    def state_dict(self) -> dict:
        rng = {
            "torch": torch.get_rng_state(),
            "data": self.data_rng.get_state(),
            "noise": self.noise_rng.get_state(),
            "device": self.device.type,  # the streams above live on this kind of device
        }
        if self.device.type == "cuda":
            rng["cuda"] = torch.cuda.get_rng_state(self.device)
        return to_cpu({
            "step": self.step,
            "nets": self.nets.state_dict(),
            "ema": self.ema.state_dict() if self.ema is not None else None,
            "optimizers": {k: opt.state_dict() for k, opt in self.optimizers.items()},
            "optimizer_types": {k: type(opt).__name__ for k, opt in self.optimizers.items()},
            "rng": rng,
            "scalers": {k: sc.state_dict() for k, sc in self.scalers.items()},
        })

    def load_state_dict(self, state: dict, warn=print) -> None:
        self.nets.load_state_dict(state["nets"])
        if self.ema is not None:
            # A checkpoint without EMA (ema was off) starts the average at the current weights.
            self.ema.load_state_dict(state["ema"] or self.nets.generator.state_dict())
        for name, opt in self.optimizers.items():
            group = state["optimizers"][name]["param_groups"][0]  # older files: tell by the keys
            guessed = "Adam" if "betas" in group else "RMSprop" if "alpha" in group else None
            saved_type = state.get("optimizer_types", {}).get(name, guessed)
            if saved_type != type(opt).__name__:
                raise ValueError(f"the {name} optimiser was {saved_type}, this run's is "
                                 f"{type(opt).__name__}")
            opt.load_state_dict(state["optimizers"][name])
        for name, scaler in self.scalers.items():
            if state.get("scalers", {}).get(name):
                scaler.load_state_dict(state["scalers"][name])
        rng = state["rng"]
        torch.set_rng_state(rng["torch"])
        saved_device = rng.get("device", "cuda" if "cuda" in rng else "cpu")
        if saved_device == self.device.type:
            self.data_rng.set_state(rng["data"])
            self.noise_rng.set_state(rng["noise"])
            if "cuda" in rng and self.device.type == "cuda":
                torch.cuda.set_rng_state(rng["cuda"], self.device)
        else:  # CUDA and CPU generators have different states: new streams, same weights
            self.data_rng.manual_seed(self.seed + 1000 * state["step"])
            self.noise_rng.manual_seed(self.seed + 1 + 1000 * state["step"])
            warn(f"igm: warning: the checkpoint's data and noise streams are {saved_device} "
                 f"streams; on {self.device.type} they restart from the seed (weights, "
                 f"optimisers and EMA are restored exactly, the batches differ)")
        self.step = state["step"]

    def params_finite(self) -> bool:
        """Whether every weight is finite, in one device sync."""
        params = [p.detach().flatten() for p in self.nets.parameters()]
        return bool(torch.isfinite(torch.cat(params)).all())


def to_cpu(value):
    """``value`` with every tensor moved to the CPU (nested dicts, lists and tuples)."""
    if isinstance(value, torch.Tensor):
        return value.detach().cpu()
    if isinstance(value, dict):
        return {k: to_cpu(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(to_cpu(v) for v in value)
    return value
