"""Run folders: one process owns one folder, and every path igm hands to Hydra is quoted.

- A run folder is locked (``.lock``, an flock held for the life of the process) before anything
  is written there; a second process on the same folder stops with "in use by pid N".
- Default folder names are unique: two runs started in the same second get ``..._2``.
- A fresh run refuses a folder that already holds files (resume= continues one instead).
- Leftovers of a killed process (``.NAME.tmp-PID`` files of atomic writes) are removed once the
  lock is held.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from igm_cli.errors import IgmError

LOCK_NAME = ".lock"
_HELD: dict[Path, int] = {}  # folders this process has locked -> open file descriptor

# Keys whose values are paths: `~` is expanded, relative paths mean the folder the command was
# typed in, and the value is quoted for Hydra (commas, brackets, spaces, quotes, non-ASCII).
PATH_KEYS = ("resume", "dataset.path", "dataset.root", "eval.weights", "hydra.run.dir",
             "hydra.sweep.dir")


def quote(value: str) -> str:
    """``value`` as a Hydra quoted string: single quotes, with a quote escaped as \\' and the
    backslashes just before a quote or at the end doubled (Hydra's escaping rules)."""
    out, i = [], 0
    while i < len(value):
        j = i
        while j < len(value) and value[j] == "\\":
            j += 1
        run = value[i:j]
        at_quote_or_end = j == len(value) or value[j] == "'"
        out.append(run * 2 if at_quote_or_end else run)
        if j < len(value):
            out.append("\\'" if value[j] == "'" else value[j])
        i = j + 1
    return "'" + "".join(out) + "'"


def expand_path(value: str) -> str:
    """``~`` expanded and the path made absolute against the current folder."""
    return str(Path(os.path.expanduser(value)).absolute())


def rewrite_path_args(args: list[str]) -> list[str]:
    """Command-line ``KEY=PATH`` arguments for the keys of PATH_KEYS, before Hydra's parser sees
    them: unquoted values are expanded and quoted, so that `dataset.path=~/faces` and
    `resume=runs/a,b` mean what they say. Quoted values, sweeps and other keys pass unchanged."""
    rewritten = []
    for arg in args:
        key, sep, value = arg.partition("=")
        if sep and key in PATH_KEYS and value and value[0] not in "'\"" and value != "null":
            arg = f"{key}={quote(expand_path(value))}"
        rewritten.append(arg)
    return rewritten


def unique_dir(path: Path) -> Path:
    """``path``, or ``path_2``, ``path_3``, ... : the first name not yet taken, created now
    (mkdir is atomic, so two processes never get the same folder)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    candidate, n = path, 1
    while True:
        try:
            candidate.mkdir()
            return candidate
        except FileExistsError:
            n += 1
            candidate = path.with_name(f"{path.name}_{n}")


def holds_files(folder: Path) -> bool:
    """Whether ``folder`` exists and holds anything but our own lock file."""
    return folder.is_dir() and any(p.name != LOCK_NAME for p in folder.iterdir())


def lock(folder: Path) -> None:
    """Take the run folder's lock for the life of this process (IgmError when another process
    holds it). Re-locking a folder this process holds is a no-op."""
    folder = folder.resolve()
    if folder in _HELD:
        return
    try:
        import fcntl
    except ImportError:  # no flock (Windows): run unlocked
        return
    folder.mkdir(parents=True, exist_ok=True)
    fd = os.open(folder / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        owner = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
        os.close(fd)
        raise IgmError(f"run folder '{folder}' is in use by pid {owner}; wait for it to end, "
                       "or choose another folder") from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    _HELD[folder] = fd
    remove_stale_temporaries(folder)


def unlock(folder: Path) -> None:
    fd = _HELD.pop(folder.resolve(), None)
    if fd is not None:
        os.close(fd)


TEMPORARY = re.compile(r"^\..+\.tmp-\d+$")


def remove_stale_temporaries(folder: Path) -> None:
    """Delete ``.NAME.tmp-PID`` files that a killed process left behind (we hold the lock, so
    no live process of ours is writing them)."""
    for sub in (folder, folder / "checkpoints"):
        if sub.is_dir():
            for p in sub.iterdir():
                if TEMPORARY.match(p.name) and p.is_file():
                    p.unlink(missing_ok=True)
