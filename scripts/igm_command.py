"""The `igm` command the benchmark scripts run: the one installed beside this interpreter,
else the one on PATH, else `python -m igm_cli`."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path


def igm_command() -> list[str]:
    beside = Path(sys.executable).with_name("igm")
    if beside.exists():
        return [str(beside)]
    on_path = shutil.which("igm")
    return [on_path] if on_path else [sys.executable, "-m", "igm_cli"]
