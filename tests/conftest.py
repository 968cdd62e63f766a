"""Shared helpers: run the installed `igm` command in a temporary folder."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

# The README's test command runs one pytest-xdist worker per core (at most 4): each worker, and
# the igm processes it starts, takes its share of the cores rather than all of them.
if "PYTEST_XDIST_WORKER_COUNT" in os.environ:
    _THREADS = max(1, (os.cpu_count() or 1) // int(os.environ["PYTEST_XDIST_WORKER_COUNT"]))
    torch.set_num_threads(_THREADS)
    os.environ.setdefault("OMP_NUM_THREADS", str(_THREADS))

# Small, fast settings for CLI runs; each test adds what it checks.
FAST = ["train.log_every=10", "train.print_every=10", "eval.n_samples=300"]


def compose_train(overrides: list[str], hydra_config: bool = False):
    """The config `igm train OVERRIDES` would run with, composed in-process (no run)."""
    from hydra import compose, initialize_config_dir

    from igm_cli.cli import config_dir

    with initialize_config_dir(str(config_dir()), version_base="1.3"):
        return compose("train", overrides=overrides, return_hydra_config=hydra_config)


def pytest_collection_modifyitems(config, items):
    """Tests marked ``gpu`` skip themselves where CUDA is not available."""
    if torch.cuda.is_available():
        return
    no_cuda = pytest.mark.skip(reason="needs CUDA (marked gpu)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(no_cuda)


def igm_command() -> list[str]:
    script = Path(sys.executable).with_name("igm")
    return [str(script)] if script.exists() else [sys.executable, "-m", "igm_cli"]


def run_igm(args, cwd: Path, timeout: float = 240, check: bool = False, env_extra=None,
            **kwargs):
    env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env_extra or {})}
    env.pop("HYDRA_FULL_ERROR", None)
    result = subprocess.run([*igm_command(), *map(str, args)], cwd=cwd, env=env,
                            capture_output=True, text=True, timeout=timeout, **kwargs)
    if check and result.returncode != 0:
        raise AssertionError(f"igm {' '.join(map(str, args))} failed ({result.returncode}):\n"
                             f"{result.stdout}\n{result.stderr}")
    return result


@pytest.fixture
def igm(tmp_path):
    """``igm(*args)`` runs the CLI with ``tmp_path`` as working folder."""
    return lambda *args, **kw: run_igm(args, tmp_path, **kw)


class Fixed(nn.Module):
    """A network given as a function, for losses on hand-made critics."""

    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def forward(self, x):
        return self.fn(x)


@pytest.fixture(autouse=True)
def one_thread():
    """Tests run tiny networks: one CPU thread is fastest, and keeps parallel jobs apart."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
