"""`igm VERB --help` and `igm list`, written without importing torch or Hydra.

Names and descriptions come from the catalog (catalog.json, copied from the registries by
`python -m igm_cli.catalog --write`); what a config key means comes from its trailing
`# comment` in configs/VERB.yaml (or the comment block just above it), so each fact is written
once. A small line reader is enough for our configs: `key: value  # comment`, nested mappings
by indentation, and the `defaults:` list.
"""

from __future__ import annotations

import os
import re
import sys
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from igm_cli import catalog
from igm_cli.errors import IgmError

HYDRA_VERBS = ("train", "estimate")
EXIT_PIPE_CLOSED = 141  # 128 + SIGPIPE, what `yes | head -1` reports for `yes`


# ---------------------------------------------------------------------------- config files

@dataclass
class Entry:
    key: str  # dotted path ("train.steps"); for a defaults entry, the group ("model")
    value: str  # as written ("6000", "[fid, kid]"); a defaults entry's default choice
    meaning: str  # its trailing comment, else the comment lines right above it
    optional: bool = False  # `- optional recipe: ...`


@dataclass
class ConfigFile:
    header: list[str] = field(default_factory=list)  # the comment lines that open the file
    package: str = ""  # `# @package _global_` -> "_global_"
    defaults: list[Entry] = field(default_factory=list)
    overrides: list[Entry] = field(default_factory=list)  # `- override GROUP: CHOICE`
    keys: list[Entry] = field(default_factory=list)  # every key that holds a value
    sections: dict[str, str] = field(default_factory=dict)  # mapping keys -> their comment


def split_comment(line: str) -> tuple[str, str | None]:
    """('key: value', 'comment') of a YAML line; a '#' inside quotes is no comment."""
    quote = None
    for i, char in enumerate(line):
        if quote:
            quote = None if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char == "#" and (i == 0 or line[i - 1] in " \t"):
            return line[:i].rstrip(), line[i + 1:].strip()
    return line.rstrip(), None


@lru_cache(maxsize=None)
def read_config(path: Path) -> ConfigFile:
    config = ConfigFile()
    in_header, above, stack = True, [], []  # stack: (indent, key) of the open mappings
    for raw in Path(path).read_text(encoding="utf-8").splitlines():
        code, comment = split_comment(raw)
        if not code.strip():
            if comment is None:  # a blank line ends a comment block
                above = []
            elif comment.startswith("@package"):
                config.package = comment.split()[-1]
            elif in_header:
                config.header.append(comment)
            else:
                above.append(comment)
            continue
        in_header = False
        meaning = comment or summary(above)
        above = []
        indent, text = len(code) - len(code.lstrip()), code.strip()
        if text.startswith("- "):
            if [key for _, key in stack] == ["defaults"] and ":" in text:
                group, _, choice = text[2:].partition(":")
                words = group.split()
                entry = Entry(words[-1], choice.strip(), meaning,
                              optional="optional" in words[:-1])
                # `- override GROUP: CHOICE` changes another entry's choice (hydra/job_logging,
                # a data set's kind): not a group of this config
                (config.overrides if "override" in words[:-1] else config.defaults).append(entry)
            continue
        key, _, value = text.partition(":")
        while stack and stack[-1][0] >= indent:
            stack.pop()
        path_ = ".".join([k for _, k in stack] + [key.strip()])
        if value.strip():
            config.keys.append(Entry(path_, unquote(value.strip()), meaning))
        else:
            config.sections[path_] = meaning
            stack.append((indent, key.strip()))
    return config


def unquote(value: str) -> str:
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
        return value[1:-1]
    return value


def summary(text: str | list[str], limit: int | None = None) -> str:
    """The first sentence of a comment: up to the first '. ', '; ' or ': ' outside brackets
    (not after "et al." or "e.g."), cut to `limit` characters at a word."""
    text = " ".join(text) if isinstance(text, list) else text
    depth = 0
    for i, char in enumerate(text):
        depth += (char in "([{") - (char in ")]}")
        if (depth == 0 and char in ".;:" and text[i + 1:i + 2] in ("", " ")
                and not re.search(r"\b(al|e\.g|i\.e|cf)$", text[:i])):
            text = text[:i]
            break
    if limit and len(text) > limit:
        text = text[:limit - 3].rsplit(" ", 1)[0] + "..."
    return text.strip()


def config_dir() -> Path:
    from igm_cli.cli import config_dir as shipped

    return shipped()


def verb_config(verb: str) -> ConfigFile:
    return read_config(config_dir() / f"{verb}.yaml")


def verb_keys(verb: str) -> list[Entry]:
    """The keys of configs/VERB.yaml that a user sets, Hydra's own settings left out."""
    return [e for e in verb_config(verb).keys if not e.key.startswith("hydra.")]


def group_meaning(verb: str, entry: Entry) -> str:
    """A group's one line: its defaults entry's comment, else the comment of the VERB.yaml
    mapping of the same name (estimate.yaml's `arch:  # the critic v ...`)."""
    return entry.meaning or verb_config(verb).sections.get(entry.key, "")


def file_choices(group: str) -> list[str]:
    return sorted(p.stem for p in (config_dir() / group).glob("*.yaml"))


def group_choices(verb: str, group: str) -> list[tuple[str, str]]:
    """(name, description) of every choice of a verb's group: from the catalog, else from the
    group's config files (described by their first comment sentence, or the keys they set)."""
    kinds = catalog.group_kinds(verb, group)
    if kinds:
        return catalog.entries(*kinds)
    choices = []
    for name in file_choices(group):
        config = read_config(config_dir() / group / f"{name}.yaml")
        sets = " ".join(f"{e.key}={e.value}" for e in config.keys)
        choices.append((name, summary(config.header, limit=80) or summary(sets, limit=80)))
    return choices


def chosen_groups(verb: str, args: list[str]) -> dict[str, str | None]:
    """Each group's choice for these command-line arguments (the default unless overridden;
    a sweep's first value; interpolations such as recipe's ${model}_${dataset} resolved)."""
    chosen = {e.key: (None if e.value == "null" else e.value) for e in verb_config(verb).defaults}
    own_configs = "-cd" in args or "--config-dir" in args  # may add choices of their own
    for arg in args:
        key, sep, value = arg.lstrip("+").partition("=")
        if sep and key in chosen:
            value = value.split(",")[0]
            names = [name for name, _ in group_choices(verb, key)]
            if value not in names and not own_configs:
                raise IgmError(f"unknown {key} '{value}'; choose from: {', '.join(names)}")
            chosen[key] = value
    dataset = group_file("dataset", chosen.get("dataset"))
    for entry in dataset.overrides if dataset else []:  # a data set sets its kind (points)
        group = entry.key.lstrip("/").split("@")[0]
        if group in chosen:
            chosen[group] = entry.value
    for group, value in chosen.items():
        if value and "${" in value:
            chosen[group] = re.sub(r"\$\{(\w+)\}", lambda m: str(chosen.get(m.group(1))), value)
    return chosen


def group_file(group: str, choice: str | None) -> ConfigFile | None:
    path = config_dir() / group / f"{choice}.yaml"
    return read_config(path) if choice and path.is_file() else None


# ---------------------------------------------------------------------------- igm VERB --help

HYDRA_FLAGS = [
    ("-m, --multirun", "one job per combination of comma-separated values (seed=0,1,2)"),
    ("--cfg job|hydra|all", "print the composed config (with your overrides) instead of "
                            "running"),
    ("--info", "Hydra's information: config search path, defaults tree, sources"),
    ("--hydra-help", "Hydra's own help (hydra/launcher=..., hydra/sweeper=... groups)"),
    ("-sc install=bash", "print the shell completion script (same as igm completion bash)"),
]


def verb_help(verb: str, args: list[str]) -> str:
    config = verb_config(verb)
    chosen = chosen_groups(verb, args)
    lines = [f"usage: igm {verb} [GROUP=NAME ...] [KEY=VALUE ...] [-m] [--cfg job|hydra|all] "
             f"[--info] [--hydra-help]", "", *config.header, ""]

    lines.append("config groups (GROUP=NAME; * marks the choice for these arguments):")
    global_values = {}  # keys set by chosen files of package _global_ (recipe): key -> value
    all_choices = {e.key: group_choices(verb, e.key) for e in config.defaults}
    width = max(len(name) for choices in all_choices.values() for name, _ in choices) + 2
    for entry in config.defaults:
        group, choice = entry.key, chosen[entry.key]
        choices = all_choices[group]
        note = ""
        if entry.optional:
            applies = choice in dict(choices)
            note = f" (optional; {'applies now: ' + choice if applies else 'none applies now'})"
        lines.append(f"  {group}=  {group_meaning(verb, entry)}{note}")
        lines += [f"    {'*' if name == choice else ' '} {name:<{width}}{description}".rstrip()
                  for name, description in choices]
        chosen_file = group_file(group, choice)
        if chosen_file and chosen_file.package == "_global_":
            global_values.update({e.key: (e.value, f"{group} {choice}")
                                  for e in chosen_file.keys})

    own = verb_keys(verb)
    sections = [("config keys (KEY=VALUE; default, meaning):",
                 [(e.key, e.value, e.meaning) for e in own])]
    own_names = {e.key for e in own}
    for entry in config.defaults:
        group, choice = entry.key, chosen[entry.key]
        chosen_file = group_file(group, choice)
        if chosen_file is None or chosen_file.package == "_global_":
            continue
        rows = [(f"{group}.{e.key}", e.value, e.meaning) for e in chosen_file.keys
                if e.key != "name" and f"{group}.{e.key}" not in own_names]
        if rows:
            sections.append((f"keys of {group}={choice} (configs/{group}/{choice}.yaml):", rows))
    width = max(len(key) for _, rows in sections for key, _, _ in rows) + 2
    for title, rows in sections:
        lines += ["", title]
        for key, value, meaning in rows:
            if key in catalog.KEY_KINDS:
                names = [name for name, _ in catalog.entries(catalog.KEY_KINDS[key])]
                if not all(name in meaning for name in names):
                    meaning = f"{meaning} (choices: {', '.join(names)})".strip()
            if key in global_values:
                meaning = f"set by {global_values[key][1]} (file: {value}; {meaning})"
                value = global_values[key][0]
            lines.append(f"  {key:<{width}}{value:<12} {meaning}".rstrip())

    lines += ["", "Hydra flags:"]
    lines += [f"  {flag:<22}{meaning}" for flag, meaning in HYDRA_FLAGS]
    lines += ["", f"`igm {verb} GROUP=NAME --help` shows that choice's keys; `igm list` the "
                  f"registered names; configs/ holds every file."]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------- igm list

def list_kind(word: str) -> str:
    kind = word[:-1] if word.endswith("s") and word[:-1] in catalog.LIST_KINDS else word
    if kind not in catalog.LIST_KINDS:
        raise IgmError(f"unknown kind '{word}' for igm list; choose from: "
                       f"{', '.join(k + 's' for k in catalog.LIST_KINDS)}")
    return kind


def list_usage() -> str:
    return (f"usage: igm list [KIND ...]\nevery registered name with one line, or only those "
            f"of KIND: {', '.join(k + 's' for k in catalog.LIST_KINDS)}\n")


def list_text(args: list[str]) -> str:
    kinds = [list_kind(word) for word in args] or list(catalog.LIST_KINDS)
    lines = []
    for kind in dict.fromkeys(kinds):
        lines.append(f"{kind}s:")
        for sub in catalog.LIST_KINDS[kind]:
            only = "(igm estimate only) " if sub == "ipm" else ""
            lines += [f"  {name:<22} {only}{description}"
                      for name, description in catalog.entries(sub)]
    return "\n".join(lines) + "\n"


def list_command(args: list[str]) -> int:
    if "-h" in args or "--help" in args:
        return emit(list_usage())
    return emit(list_text(args))


# ---------------------------------------------------------------------------- output

def emit(text: str) -> int:
    """Print and flush now, so that a closed pipe (`igm list | head -1`) is met here, where
    the caller's BrokenPipeError handler sees it, not at interpreter exit."""
    sys.stdout.write(text)
    sys.stdout.flush()
    return 0


def reader_gone() -> int:
    """The reader of stdout left (`igm list | head -1`): stop quietly. Point stdout at
    /dev/null so that the interpreter's final flush does not complain either."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    return EXIT_PIPE_CLOSED


def answer_without_hydra(verb: str, args: list[str]) -> int | None:
    """`igm train|estimate --help` and `-sc ...`: answered here, fast; None: go on to Hydra."""
    if "-h" in args or "--help" in args:
        return emit(verb_help(verb, [a for a in args if a not in ("-h", "--help")]))
    if "-sc" in args or "--shell-completion" in args:
        from igm_cli.completion import hydra_shell_completion

        return hydra_shell_completion(args)
    return None
