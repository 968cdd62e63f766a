"""The trainer's whole state in one object: networks, EMA, optimisers, RNG streams, step.

``state_dict()`` is everything a resume needs, so N steps + resume gives the same weights as
one unbroken run. The networks sit in one ``nn.ModuleDict`` (``nets.generator``,
``nets.critic``, ...) so that a later DDP wrapper or a ``torch.func`` replica sees one module.
"""

from __future__ import annotations

import copy

import torch
from torch import nn


class TrainState:
    def __init__(
        self,
        nets: nn.ModuleDict,
        optimizers: dict[str, torch.optim.Optimizer],
        base_lrs: dict[str, float],
        ema_decay: float,
        seed: int,
        device: torch.device,
    ):
        self.nets = nets
        self.optimizers = optimizers
        self.base_lrs = base_lrs
        self.ema_decay = ema_decay
        # The generator's exponential moving average, used for evaluation and sampling.
        self.ema = copy.deepcopy(nets.generator).requires_grad_(False) if ema_decay else None
        self.step = 0
        self.scalers: dict[str, torch.amp.GradScaler] = {}  # fp16 only, one per optimiser
        # Separate streams, so that e.g. changing n_critic does not shift the data sequence
        # of an evaluation, and each can be saved and restored exactly.
        self.data_rng = torch.Generator(device).manual_seed(seed)
        self.noise_rng = torch.Generator(device).manual_seed(seed + 1)
        torch.manual_seed(seed + 2)  # anything an objective draws itself (e.g. penalty mixing)

    def make_scalers(self, device: torch.device) -> dict:
        self.scalers = {name: torch.amp.GradScaler(device.type) for name in self.optimizers}
        return self.scalers

    @property
    def sampler(self) -> nn.Module:
        """The generator to evaluate and sample from: the EMA copy when there is one."""
        return self.ema if self.ema is not None else self.nets.generator

    @torch.no_grad()
    def update_ema(self) -> None:
        if self.ema is None:
            return
        ema_params = list(self.ema.parameters())
        params = [p.detach() for p in self.nets.generator.parameters()]
        torch._foreach_lerp_(ema_params, params, 1 - self.ema_decay)  # ema += (1-d)(p - ema)
        for ema_buf, buf in zip(self.ema.buffers(), self.nets.generator.buffers()):
            ema_buf.copy_(buf)

    def set_lr(self, factor: float) -> None:
        for name, opt in self.optimizers.items():
            for group in opt.param_groups:
                group["lr"] = self.base_lrs[name] * factor

    def state_dict(self) -> dict:
        rng = {
            "torch": torch.get_rng_state(),
            "data": self.data_rng.get_state(),
            "noise": self.noise_rng.get_state(),
        }
        if torch.cuda.is_available():
            rng["cuda"] = torch.cuda.get_rng_state_all()
        return {
            "step": self.step,
            "nets": self.nets.state_dict(),
            "ema": self.ema.state_dict() if self.ema is not None else None,
            "optimizers": {k: opt.state_dict() for k, opt in self.optimizers.items()},
            "rng": rng,
            "scalers": {k: sc.state_dict() for k, sc in self.scalers.items()},
        }

    def load_state_dict(self, state: dict) -> None:
        self.nets.load_state_dict(state["nets"])
        if self.ema is not None:
            # A checkpoint without EMA (ema was off) starts the average at the current weights.
            self.ema.load_state_dict(state["ema"] or self.nets.generator.state_dict())
        for name, opt in self.optimizers.items():
            opt.load_state_dict(state["optimizers"][name])
        for name, scaler in self.scalers.items():
            if name in state.get("scalers", {}):
                scaler.load_state_dict(state["scalers"][name])
        rng = state["rng"]
        torch.set_rng_state(rng["torch"])
        self.data_rng.set_state(rng["data"])
        self.noise_rng.set_state(rng["noise"])
        if "cuda" in rng and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(rng["cuda"])
        self.step = state["step"]

    def params_finite(self) -> bool:
        return all(torch.isfinite(p).all() for p in self.nets.parameters())
