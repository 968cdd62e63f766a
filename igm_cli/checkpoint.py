"""Checkpoints: plain dicts of tensors and Python values, written atomically.

A checkpoint loads with ``torch.load(path, weights_only=True)``: it holds only tensors, numbers,
strings, lists and dicts (the resolved config is a plain dict, RNG states are uint8 tensors).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from igm_cli.errors import IgmError

FORMAT = 1  # bump when the layout changes


def save_atomic(payload: dict[str, Any], path: Path) -> None:
    """Write to a temporary file in the same folder, flush it to disk, then rename over
    ``path``: a kill at any moment leaves either the old or the new checkpoint, never half."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            torch.save(payload, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def resolve_checkpoint(path: str | os.PathLike) -> Path:
    """A run folder means its ``checkpoints/last.pt``; a file is taken as it is."""
    given = Path(path).expanduser()
    if given.is_dir():
        given = given / "checkpoints" / "last.pt"
        if not given.is_file():
            raise IgmError(f"no checkpoint in '{path}' (expected {given})")
    elif not given.is_file():
        raise IgmError(f"checkpoint '{path}' does not exist")
    return given


def run_dir_of(checkpoint: Path) -> Path:
    """The run folder a checkpoint belongs to (``RUN/checkpoints/last.pt`` -> ``RUN``)."""
    parent = checkpoint.resolve().parent
    return parent.parent if parent.name == "checkpoints" else parent


def load_checkpoint(path: str | os.PathLike, map_location="cpu") -> dict[str, Any]:
    """Load a checkpoint safely (``weights_only=True``) and check that it is one of ours."""
    file = resolve_checkpoint(path)
    try:
        payload = torch.load(file, map_location=map_location, weights_only=True)
    except Exception as exc:  # pickle, zip and unpickler errors all mean "not a checkpoint"
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise IgmError(f"'{file}' is not a readable igm checkpoint ({reason[:200]})") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT or "config" not in payload:
        raise IgmError(f"'{file}' is not an igm checkpoint (format {FORMAT})")
    return payload
