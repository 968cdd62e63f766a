"""The value of every config key a user sets, checked in one place before anything is written.

Each rule names what it accepts, so a bad value gets one line: "model.lr must be a number > 0,
got -1". Keys a config does not have are skipped (a model without ``n_critic`` has none to
check); keys not listed here are checked where they are used (the objective's constructor, the
data set's builder), also before the run folder exists.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from omegaconf import DictConfig, ListConfig, OmegaConf

from igm_cli.errors import IgmError


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


@dataclass(frozen=True)
class Integer:
    minimum: int

    def ok(self, value) -> bool:
        return isinstance(value, int) and not isinstance(value, bool) and value >= self.minimum

    def __str__(self) -> str:
        return f"an integer >= {self.minimum}"


@dataclass(frozen=True)
class Number:
    low: float
    high: float = math.inf
    low_open: bool = False  # (low, ...] rather than [low, ...]
    high_open: bool = True

    def ok(self, value) -> bool:
        if not _is_number(value):
            return False
        above = value > self.low if self.low_open else value >= self.low
        below = value < self.high if self.high_open else value <= self.high
        return above and below

    def __str__(self) -> str:
        if self.high == math.inf:
            return f"a number {'>' if self.low_open else '>='} {self.low:g}"
        left, right = "(" if self.low_open else "[", ")" if self.high_open else "]"
        return f"a number in {left}{self.low:g}, {self.high:g}{right}"


@dataclass(frozen=True)
class Choice:
    choices: tuple

    def ok(self, value) -> bool:
        return any(value == c and type(value) is type(c) for c in self.choices)

    def __str__(self) -> str:
        return "one of " + ", ".join(str(c).lower() if isinstance(c, bool) else str(c)
                                      for c in self.choices)


BOOLEAN = Choice((True, False))


@dataclass(frozen=True)
class Numbers:
    """A list of numbers, each accepted by ``each``; ``length`` when it is fixed."""

    each: Number
    length: int | None = None

    def ok(self, value) -> bool:
        if not isinstance(value, (list, tuple, ListConfig)) or not len(value):
            return False
        return (self.length is None or len(value) == self.length) and all(
            self.each.ok(v) for v in value)

    def __str__(self) -> str:
        count = f"{self.length} numbers" if self.length else "a non-empty list of numbers"
        return f"{count}, each {self.each}"


@dataclass(frozen=True)
class Optional:
    """null, or a value ``rule`` accepts."""

    rule: object

    def ok(self, value) -> bool:
        return value is None or self.rule.ok(value)

    def __str__(self) -> str:
        return f"null or {self.rule}"


@dataclass(frozen=True)
class AutoOr:
    """``auto`` (derived from the data by the arch), or a value ``rule`` accepts."""

    rule: object

    def ok(self, value) -> bool:
        return value == "auto" or self.rule.ok(value)

    def __str__(self) -> str:
        return f"auto or {self.rule}"


POSITIVE = Number(0.0, low_open=True)
NON_NEGATIVE = Number(0.0)

RULES: dict[str, object] = {
    "seed": Integer(0),
    "train.steps": Integer(1),
    "train.batch_size": Integer(1),
    "train.log_every": Integer(1),
    "train.print_every": Integer(1),
    "train.threads": Integer(1),
    "train.devices": Integer(1),
    "train.lr_decay": Choice(("linear", "none")),
    "train.amp": Choice(("off", "bf16", "fp16", "auto")),
    "train.compile": BOOLEAN,
    "train.channels_last": Choice(("auto", True, False)),
    "train.deterministic": BOOLEAN,
    "train.sync_batchnorm": BOOLEAN,
    "train.recipe_steps": Optional(Integer(1)),
    "eval.every": Integer(1),
    "eval.n_samples": Integer(2),
    "eval.plot": BOOLEAN,
    "eval.background": Choice(("auto", True, False)),
    "eval.grid": Integer(1),
    "eval.confidence": Number(0.0, 1.0, low_open=True, high_open=False),
    "ckpt.every": Integer(1),
    "ckpt.keep_every": Integer(0),
    "ckpt.auto_resume": BOOLEAN,
    "model.optimizer": Choice(("adam", "rmsprop")),
    "model.lr": POSITIVE,
    "model.betas": Numbers(Number(0.0, 1.0), length=2),
    "model.ema": Number(0.0, 1.0),
    "model.n_critic": Integer(1),
    "model.r1_gamma": NON_NEGATIVE,
    "model.r1_every": Integer(1),
    "model.gp_lambda": NON_NEGATIVE,
    "model.clip": POSITIVE,
    "model.lambda_rec": NON_NEGATIVE,
    "model.warmup": BOOLEAN,
    "model.sqrt": BOOLEAN,
    "model.bandwidths": Numbers(POSITIVE),
    "model.alphas": Numbers(POSITIVE),
    "arch.z_dim": AutoOr(Integer(1)),
    "arch.hidden": AutoOr(Integer(1)),
    "arch.critic_hidden": Optional(Integer(1)),
    "arch.depth": Integer(0),
    "arch.channels": Integer(1),
    "arch.features": Integer(1),
    "arch.code_hidden": Integer(1),
    "arch.code_depth": Integer(0),
    "arch.spectral_norm": BOOLEAN,
}


def check_values(cfg: DictConfig, rules: dict[str, object] = RULES) -> None:
    """Every key of ``rules`` that ``cfg`` has must pass its rule; else one-line IgmError."""
    for key, rule in rules.items():
        value = OmegaConf.select(cfg, key, default=_MISSING)
        if value is _MISSING:
            continue
        if isinstance(value, (DictConfig, ListConfig)):
            value = OmegaConf.to_container(value, resolve=True)
        if not rule.ok(value):
            raise IgmError(f"{key} must be {rule}, got {show(value)}")


_MISSING = object()


def show(value) -> str:
    """A value as the user typed it: strings quoted, booleans lower-case, lists plain."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, Sequence) and not isinstance(value, str):
        return "[" + ",".join(show(v) for v in value) + "]"
    return repr(value)
