"""Checkpoints: plain dicts of CPU tensors and Python values, written atomically.

A checkpoint loads with ``torch.load(path, weights_only=True)`` on any machine: it holds only
tensors (on the CPU), numbers, strings, lists and dicts (the resolved config is a plain dict,
RNG states are uint8 tensors).
"""

from __future__ import annotations

import copy
import errno
import io
import os
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from igm_cli import __version__, parallel
from igm_cli.errors import IgmError

FORMAT = 1  # bump when the layout changes
WHICH = ("last", "best")


class DiskFull(IgmError):
    """No space left to write a file; what was there before is intact."""


def save_atomic(payload: dict[str, Any], path: Path) -> None:
    """Serialise in memory, write to a temporary file in the same folder, flush it to disk,
    then rename over ``path``: a kill at any moment leaves either the old or the new checkpoint,
    never half. A full disk is a DiskFull error (one line) and leaves the old file as it was.
    (Writing the bytes ourselves keeps the OS's error number: torch's own writer reports a full
    disk as "enforce fail at inline_container.cc".)"""
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            f.write(buffer.getbuffer())
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            kept = f"the previous {path.name} is intact" if path.exists() else "none was saved"
            raise DiskFull(f"no space left on device while writing {path}; {kept}") from None
        raise
    finally:
        tmp.unlink(missing_ok=True)


def resolve_checkpoint(path: str | os.PathLike, which: str = "last") -> Path:
    """A run folder means its ``checkpoints/last.pt`` (or ``best.pt``); a file is taken as it
    is."""
    if which not in WHICH:
        raise IgmError(f"unknown which '{which}'; choose from: {', '.join(WHICH)}")
    given = Path(path).expanduser()
    if given.is_dir():
        given = given / "checkpoints" / f"{which}.pt"
        if not given.is_file():
            hint = " (the run kept no best checkpoint: ckpt.keep_best)" if which == "best" else ""
            raise IgmError(f"no checkpoint in '{path}' (expected {given}){hint}")
    elif not given.is_file():
        raise IgmError(f"checkpoint '{path}' does not exist")
    return given


def run_dir_of(checkpoint: Path) -> Path:
    """The run folder a checkpoint belongs to (``RUN/checkpoints/last.pt`` -> ``RUN``)."""
    parent = checkpoint.resolve().parent
    return parent.parent if parent.name == "checkpoints" else parent


def load_checkpoint(path: str | os.PathLike, map_location="cpu", which: str = "last"
                    ) -> dict[str, Any]:
    """Load a checkpoint safely (``weights_only=True``) and check that it is one of ours."""
    file = resolve_checkpoint(path, which)
    try:
        payload = torch.load(file, map_location=map_location, weights_only=True)
    except Exception as exc:  # pickle, zip and unpickler errors all mean "not a checkpoint"
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise IgmError(f"'{file}' is not a readable igm checkpoint ({reason[:200]})") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT or "config" not in payload:
        raise IgmError(f"'{file}' is not an igm checkpoint (format {FORMAT})")
    return payload


class Checkpoints:
    """checkpoints/last.pt (every ``ckpt.every`` steps, at the end and when stopped),
    step_NNNNNNN.pt (every ``ckpt.keep_every`` steps) and best.pt (``ckpt.keep_best``), written
    atomically by rank 0 with signals held back (``stopper.critical()``)."""

    def __init__(self, cfg: DictConfig, run_dir: Path, overrides: list[str], parts, stopper):
        self.folder = run_dir / "checkpoints"
        self.last = self.folder / "last.pt"
        self.parts, self.stopper = parts, stopper
        self.header = {"format": FORMAT, "igm_version": __version__,
                       "config": OmegaConf.to_container(cfg, resolve=True),
                       "overrides": [o for o in overrides if not o.startswith("resume=")],
                       "data_shape": list(parts.dataset.shape)}
        from igm_cli.metrics import parse_keep_best

        self.keep_best = parse_keep_best(cfg.ckpt.get("keep_best"))
        self.best_value: float | None = None
        self.best_step: int | None = None

    def payload(self) -> dict:
        return {**self.header, **self.parts.state.state_dict()}

    def save(self, keep_step: bool) -> None:
        if not parallel.RANKS.main:
            return
        payload = self.payload()
        with self.stopper.critical():
            save_atomic(payload, self.last)
            if keep_step:
                save_atomic(payload, self.folder / f"step_{self.parts.state.step:07d}.pt")

    def snapshot(self) -> dict | None:
        """A copy of the checkpoint as it is now, kept for best.pt until the evaluation of this
        step is known (None when no best checkpoint is kept)."""
        if self.keep_best is None or not parallel.RANKS.main:
            return None
        return copy.deepcopy(self.payload())

    def consider_best(self, metrics: dict[str, float], step: int, payload: dict | None) -> bool:
        """Save ``payload`` (the checkpoint at ``step``) as best.pt when the chosen metric
        improved; True when it did."""
        if payload is None:
            return False
        name, direction = self.keep_best
        value = metrics.get(name)
        if value is None or value != value:  # missing or NaN
            return False
        improved = (self.best_value is None or (value < self.best_value if direction == "min"
                                                else value > self.best_value))
        if improved:
            self.best_value, self.best_step = value, step
            payload = {**payload, "best": {"metric": name, "value": value,
                                           "direction": direction}}
            with self.stopper.critical():
                save_atomic(payload, self.folder / "best.pt")
        return improved
