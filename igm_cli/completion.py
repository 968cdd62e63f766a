"""Shell completion for `igm VERB ...`: verbs, config groups and their choices, config keys,
key values, paths.

    eval "$(igm completion bash)"      # bash (put it in ~/.bashrc)
    eval "$(igm completion zsh)"       # zsh, through bashcompinit

The shell function sends the line up to the cursor to `igm completion query LINE`, which prints
one candidate per line: whole words such as `model=gan`. Hydra's own `-sc install=bash` script
registers the verb as a program of its own, which fails for `igm VERB`; here `igm train -sc
install=bash` prints this script instead. Queries read the catalog and the config files only,
never torch, so they answer in tens of milliseconds.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from igm_cli import catalog, helptext
from igm_cli.errors import IgmError

SHELLS = ("bash", "zsh")
BASH_SCRIPT = r"""# igm shell completion. Install: eval "$(igm completion bash)" (e.g. in ~/.bashrc)
_igm() {
    # Whole words come back from igm (model=gan); bash replaces only the part of the word
    # after the last '=' when '=' breaks words (the default), so that part is what we give it.
    local line="${COMP_LINE:0:COMP_POINT}"
    [[ -n "$COMP_LINE" ]] || line="${COMP_WORDS[*]:0:COMP_CWORD+1}"
    local token="${line##*[[:space:]]}" strip="" candidate IFS=$'\n'
    case "$COMP_WORDBREAKS" in *=*) strip="${token%"${token##*=}"}" ;; esac
    COMPREPLY=()
    for candidate in $("${line%%[[:space:]]*}" completion query "$line" 2>/dev/null); do
        COMPREPLY+=("${candidate#"$strip"}")
    done
    if [[ ${#COMPREPLY[@]} -eq 1 ]]; then
        case "${COMPREPLY[*]}" in  # more to type after '=', '/', '.': no space yet
            *=|*/|*.) type compopt >/dev/null 2>&1 && compopt -o nospace ;;
        esac
    fi
    return 0
}
complete -F _igm igm
"""
ZSH_PREFIX = "autoload -U +X bashcompinit && bashcompinit\n"

# Hydra's command-line flags of `igm train|estimate` (hydra._internal.utils.get_args_parser).
HYDRA_FLAGS = ("--help", "--hydra-help", "--cfg", "--info", "--multirun", "--resolve",
               "--config-dir", "--shell-completion")
CFG_CHOICES = ("job", "hydra", "all")
# Keys whose value is a file or folder: completed from the file system.
PATH_KEYS = {"run", "out", "weights", "resume", "dataset.path", "eval.weights", "hydra.run.dir",
             "hydra.sweep.dir"}
OWN_KEYS = {"hydra.run.dir", "hydra.sweep.dir"}  # the Hydra settings worth offering


def script(shell: str) -> str:
    if shell not in SHELLS:
        raise IgmError(f"unknown shell '{shell}' for completion; choose from: {', '.join(SHELLS)}")
    return (ZSH_PREFIX if shell == "zsh" else "") + BASH_SCRIPT


def completion_usage() -> str:
    return ("usage: igm completion bash|zsh\nprints the shell completion script; install it "
            "with: eval \"$(igm completion bash)\" (or zsh), e.g. in ~/.bashrc\n")


def completion_command(args: list[str]) -> int:
    """`igm completion bash|zsh` prints the script; `igm completion query LINE` answers it."""
    if args[:1] == ["query"]:
        return helptext.emit("".join(f"{c}\n" for c in candidates(" ".join(args[1:2]))))
    if args[:1] in (["-h"], ["--help"]):
        return helptext.emit(completion_usage())
    if len(args) != 1:
        got = f", got '{' '.join(args)}'" if args else ""
        raise IgmError(f"igm completion needs one shell{got}; choose from: {', '.join(SHELLS)}")
    return helptext.emit(script(args[0]))


def hydra_shell_completion(args: list[str]) -> int:
    """`igm train -sc install=bash` (Hydra's flag): print our script rather than Hydra's."""
    for arg in args:
        action, _, shell = arg.partition("=")
        if action == "install" and shell in SHELLS:
            return helptext.emit(script(shell))
        if action == "uninstall" and shell in SHELLS:
            return helptext.emit("complete -r igm\n")
    given = " ".join(arg for arg in args if not arg.startswith("-"))
    raise IgmError("-sc takes install=bash or install=zsh (the script of igm completion bash)"
                   + (f", got '{given}'" if given else ""))


# ---------------------------------------------------------------------------- candidates

def candidates(line: str) -> list[str]:
    """Every whole word that completes the last word of `line` (the text before the cursor)."""
    words = line.split()
    if not line or line[-1].isspace():
        words.append("")
    if len(words) < 2:
        return []
    current, before = words[-1], words[1:-1]
    if not before:
        return matching(verbs() + ["--help", "--version"], current)
    verb, previous = before[0], before[1:]
    if verb == "help":
        return matching(verbs(), current) if not previous else []
    if verb in helptext.HYDRA_VERBS:
        return hydra_candidates(verb, previous, current)
    if verb == "list":
        return matching([k + "s" for k in catalog.LIST_KINDS], current)
    if verb == "completion":
        return matching(list(SHELLS), current) if not previous else []
    keys = usage_keys(verb)
    if "=" in current:
        key, _, value = current.partition("=")
        return [f"{key}={v}" for v in value_candidates(key, value, "", "")] if key in keys else []
    return matching([f"{key}=" for key in keys], current)


def matching(words: list[str], prefix: str) -> list[str]:
    return [w for w in words if w.startswith(prefix)]


def verbs() -> list[str]:
    """The verbs listed under `verbs:` in `igm --help` (one per line, two spaces in)."""
    from igm_cli.cli import USAGE

    section = USAGE.split("verbs:\n", 1)[1].split("\n\n", 1)[0]
    return re.findall(r"^  ([a-z]+)\b", section, flags=re.MULTILINE)


def usage_keys(verb: str) -> list[str]:
    """The key=value arguments of `igm sample|eval|reconstruct`, read from its usage line."""
    from igm_cli import cli

    usage = getattr(cli, f"{verb}_usage", None)
    return re.findall(r"\b([a-z_]+)=", usage().splitlines()[0]) if usage else []


def hydra_candidates(verb: str, previous: list[str], current: str) -> list[str]:
    if previous and previous[-1] in ("--cfg", "-c"):
        return matching(list(CFG_CHOICES), current)
    if current.startswith("-"):
        return matching(list(HYDRA_FLAGS) + ["-m"], current)
    sign = re.match(r"[+~]*", current).group()  # +key=, ++key=, ~key
    current = current[len(sign):]
    chosen = chosen_or_defaults(verb, previous)
    groups = [e.key for e in helptext.verb_config(verb).defaults]
    if "=" not in current:
        names = [f"{g}=" for g in groups] + [f"{k}=" for k in key_meanings(verb, chosen)]
        return [sign + name for name in matching(names, current)]
    key, _, value = current.partition("=")
    done, _, last = value.rpartition(",")  # a sweep: complete the last value
    done = f"{done}," if done else ""
    if key in groups:
        values = matching([name for name, _ in helptext.group_choices(verb, key)], last)
    else:
        comment, default = key_meanings(verb, chosen).get(key, ("", ""))
        values = value_candidates(key, last, comment, default)
    return [f"{sign}{key}={done}{v}" for v in values]


def chosen_or_defaults(verb: str, previous: list[str]) -> dict:
    try:
        return helptext.chosen_groups(verb, previous)
    except IgmError:  # a misspelt choice earlier on the line: complete as for the defaults
        return helptext.chosen_groups(verb, [])


def key_meanings(verb: str, chosen: dict) -> dict[str, tuple[str, str]]:
    """key -> (comment, default) for the verb's keys and those of its chosen group files."""
    keys = {e.key: (e.meaning, e.value) for e in helptext.verb_keys(verb)}
    keys.update({e.key: (e.meaning, e.value) for e in helptext.verb_config(verb).keys
                 if e.key in OWN_KEYS})
    for group, choice in chosen.items():
        config = helptext.group_file(group, choice)
        if config is None or config.package == "_global_":
            continue
        for e in config.keys:
            if e.key != "name":
                keys.setdefault(f"{group}.{e.key}", (e.meaning, e.value))
    return keys


def value_candidates(key: str, prefix: str, comment: str, default: str) -> list[str]:
    if key in PATH_KEYS:
        return paths(prefix)
    if key in catalog.KEY_KINDS:
        values = [name for name, _ in catalog.entries(catalog.KEY_KINDS[key])]
    elif default in ("true", "false"):
        values = ["true", "false"]
    else:
        values = comment_choices(comment)
    return matching(values, prefix)


def comment_choices(comment: str) -> list[str]:
    """`auto | cpu | cuda (auto takes a GPU ...)` -> [auto, cpu, cuda]; a lead-in such as
    `feature extractor: ` before the first choice is skipped."""
    if "|" not in comment:
        return []
    parts = [part.strip() for part in comment.split("|")]
    if ":" in parts[0].split("(")[0]:
        parts[0] = parts[0].split(":", 1)[1].strip()
    words = [part.split()[0] if part else "" for part in parts]
    return words if all(re.fullmatch(r"[\w.-]+", w) for w in words) else []


def paths(prefix: str) -> list[str]:
    """Files and folders that start with `prefix`, relative as typed; folders end in '/'."""
    folder, slash, start = prefix.rpartition("/")
    head = folder + slash
    where = Path(os.path.expanduser(head or "."))
    try:
        names = sorted(os.listdir(where))
    except OSError:
        return []
    found = []
    for name in names:
        if name.startswith(start) and (start.startswith(".") or not name.startswith(".")):
            found.append(head + name + ("/" if (where / name).is_dir() else ""))
    return found
