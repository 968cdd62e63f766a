"""`igm --help`, `igm VERB --help`, `igm list [KIND]` and shell completion: fast (no torch),
each verb's own groups and keys, and a bash completion that works for `igm VERB`."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import igm_command

from igm_cli import catalog, helptext

F_DIVERGENCES = ["gan", "jeffrey", "jensen_shannon", "kl", "neyman", "pearson", "reverse_kl",
                 "squared_hellinger", "total_variation"]


def group_block(text: str, group: str) -> list[str]:
    """The choice names listed under `  GROUP=` in a verb's help."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"  {group}=  "))
    names = []
    for line in lines[start + 1:]:
        if not line.startswith("    "):
            break
        names.append(line[6:].split()[0])
    return names


# ---------------------------------------------------------------------------- speed

@pytest.mark.parametrize("args", [["--help"], ["list"], ["list", "models"], ["train", "--help"],
                                  ["estimate", "--help"], ["completion", "bash"],
                                  ["completion", "query", "igm train model=g"]])
def test_help_list_and_completion_import_no_torch(args):
    """`import torch` alone takes 1-2 s; help, list and completion must not pay it (nor
    Hydra's import)."""
    code = ("import sys\n"
            "from igm_cli.cli import main\n"
            "try:\n"
            "    rc = main(sys.argv[1:])\n"
            "except SystemExit as exc:  # Hydra's help exits\n"
            "    rc = exc.code\n"
            "heavy = [m for m in ('torch', 'hydra') if m in sys.modules]\n"
            "assert not heavy, heavy\n"
            "sys.exit(rc)\n")
    result = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip()


def test_catalog_matches_registries():
    problem = catalog.check()
    assert problem is None, problem


def test_catalog_check_names_the_fix(tmp_path, monkeypatch):
    """A stale catalog.json is reported with the command that regenerates it."""
    stale = catalog.read_file()
    stale["model"] = {**stale["model"], "gan": "an old description"}
    monkeypatch.setattr(catalog, "read_file", lambda: stale)
    problem = catalog.check()
    assert "python -m igm_cli.catalog --write" in problem and "an old description" in problem


# ---------------------------------------------------------------------------- igm VERB --help

def test_train_help_shows_train_groups_and_keys(igm):
    text = igm("train", "--help", check=True).stdout
    assert group_block(text, "divergence") == F_DIVERGENCES  # no wasserstein, no mmd
    assert group_block(text, "model")[:3] == ["alpha_gan", "fgan", "fgan_ratio"]
    assert "ring8" in group_block(text, "dataset") and "mlp" in group_block(text, "arch")
    assert "wgan_points" in group_block(text, "recipe")
    for absent in ("  p=", "  q=", "method"):
        assert absent not in text
    # one line per choice with its registry description; * marks the default
    assert "* gan" in text and "GAN, non-saturating generator loss -log D(G(z))" in text
    assert "* ring8" in text and "* jensen_shannon" in text
    # one line per key: default and the trailing comment of configs/train.yaml
    lines = text.splitlines()
    assert any(line.split()[:2] == ["train.threads", "1"] and "CPU threads" in line
               for line in lines)
    assert any(line.split()[:2] == ["device", "auto"] and "auto | cpu | cuda" in line
               for line in lines)
    for entry in helptext.verb_keys("train"):
        assert any(line.split()[:1] == [entry.key] and entry.meaning in line for line in lines)
    assert "hydra.job" not in text


def test_estimate_help_shows_estimate_groups(igm):
    text = igm("estimate", "--help", check=True).stdout
    assert group_block(text, "divergence") == [*F_DIVERGENCES, "wasserstein", "mmd"]
    assert group_block(text, "p") == ["gaussian", "gaussian_mixture", "lines"]
    assert group_block(text, "q") == ["gaussian", "gaussian_mixture", "lines"]
    assert "mlp" in group_block(text, "arch")
    assert "  model=" not in text and "  dataset=" not in text
    lines = text.splitlines()
    assert any(line.split()[:2] == ["method", "variational"] for line in lines)
    assert any(line.split()[:2] == ["arch.hidden", "64"] for line in lines)
    assert any(line.split()[:2] == ["p.loc", "[0.0]"] for line in lines)


def test_help_follows_the_chosen_groups(igm):
    """`igm train model=wgan --help`: wgan's own keys, and the recipe that changes them."""
    text = igm("train", "model=wgan", "--help", check=True).stdout
    assert "* wgan" in text and "keys of model=wgan (configs/model/wgan.yaml):" in text
    assert "applies now: wgan_points" in text
    lr = next(line for line in text.splitlines() if line.split()[:1] == ["model.lr"])
    assert lr.split()[1] == "5.0e-4" and "recipe wgan_points" in lr
    bad = igm("train", "model=wgann", "--help")
    assert bad.returncode == 2 and "unknown model 'wgann'" in bad.stderr


def test_every_config_key_and_group_has_a_meaning():
    """The help derives each key's meaning from configs/VERB.yaml: every key needs one."""
    for verb in helptext.HYDRA_VERBS:
        for entry in helptext.verb_keys(verb):
            assert entry.meaning, f"configs/{verb}.yaml: key {entry.key} has no # comment"
        for entry in helptext.verb_config(verb).defaults:
            assert helptext.group_meaning(verb, entry), f"{verb}: group {entry.key}"


def test_hydra_flags_still_work(igm):
    job = igm("train", "model=wgan", "--cfg", "job", check=True).stdout
    assert "name: wgan" in job and "steps: 6000" in job
    assert "Hydra" in igm("train", "--hydra-help", check=True).stdout
    info = igm("estimate", "--info", "defaults", check=True).stdout
    assert "divergence/kl" in info


def test_main_help_names_every_verb(igm):
    text = igm("--help", check=True).stdout
    for verb in ("train", "estimate", "sample", "eval", "reconstruct", "list", "completion"):
        assert f"\n  {verb} " in text
    assert igm("help", "estimate", check=True).stdout.startswith("usage: igm estimate")


# ---------------------------------------------------------------------------- igm list

@pytest.mark.parametrize("word", ["models", "model"])
def test_igm_list_kind_filters(igm, word):
    text = igm("list", word, check=True).stdout
    assert text.startswith("models:\n")
    names = [line.split()[0] for line in text.splitlines()[1:]]
    assert names == list(catalog.load()["model"])
    assert "ring8" not in text and "datasets:" not in text


def test_igm_list_divergences_marks_estimate_only(igm):
    text = igm("list", "divergences", check=True).stdout
    assert [line.split()[0] for line in text.splitlines()[1:]] == [*F_DIVERGENCES,
                                                                    "wasserstein", "mmd"]
    assert "mmd                    (igm estimate only) Squared maximum mean" in text


def test_igm_list_unknown_kind(igm):
    result = igm("list", "modles")
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.strip().splitlines() == [
        "igm: error: unknown kind 'modles' for igm list; choose from: models, datasets, "
        "archs, divergences, metrics"]


@pytest.mark.parametrize("args", [["list"], ["--help"], ["train", "--help"],
                                  ["completion", "bash"]])
def test_closed_pipe_exits_quietly(tmp_path, args):
    """`igm list | head -1`: the reader has gone; no BrokenPipeError traceback."""
    read_end, write_end = os.pipe()
    os.close(read_end)  # every write to the pipe now fails with EPIPE
    try:
        result = subprocess.run([*igm_command(), *args], stdout=write_end, stderr=subprocess.PIPE,
                                text=True, cwd=tmp_path, timeout=60)
    finally:
        os.close(write_end)
    assert result.stderr == ""
    assert result.returncode == helptext.EXIT_PIPE_CLOSED


# ---------------------------------------------------------------------------- completion

def complete(line: str, cwd: Path, words: list[str] | None = None) -> list[str]:
    """What bash offers at the end of `line`, through the script of `igm completion bash`."""
    command = igm_command()
    setup = (f'export PATH="{Path(command[0]).parent}:$PATH"' if len(command) == 1
             else f'igm() {{ "{sys.executable}" -m igm_cli "$@"; }}')
    words = words if words is not None else line.split() + ([""] if line.endswith(" ") else [])
    quoted = " ".join(f"'{w}'" for w in words)
    program = (f'{setup}\neval "$(igm completion bash)"\n'
               f"COMP_LINE='{line}'; COMP_POINT=${{#COMP_LINE}}\n"
               f"COMP_WORDS=({quoted}); COMP_CWORD={len(words) - 1}\n"
               '_igm igm\nprintf "%s\\n" "${COMPREPLY[@]}"\n')
    result = subprocess.run(["bash", "--norc", "--noprofile", "-c", program], cwd=cwd,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return [w for w in result.stdout.splitlines() if w]


@pytest.mark.parametrize("line, expected", [
    ("igm tr", ["train"]),
    ("igm e", ["estimate", "eval"]),
    ("igm train model.r", ["model.r1_gamma=", "model.r1_every="]),
    ("igm train model=g", ["gan", "gan_minimax", "gmmn"]),  # bash replaces what follows '='
    ("igm train model=gan,wgan", ["gan,wgan", "gan,wgan_gp"]),  # a sweep
    ("igm train train.st", ["train.steps="]),
    ("igm train divergence=", F_DIVERGENCES),
    ("igm estimate divergence=", [*F_DIVERGENCES, "wasserstein", "mmd"]),
    ("igm estimate me", ["method="]),
    ("igm estimate method=", ["variational", "ratio"]),
    ("igm train device=", ["auto", "cpu", "cuda"]),
    ("igm train train.amp=", ["off", "bf16", "fp16", "auto"]),
    ("igm train eval.features=", ["digits", "inception", "pixels", "random_conv"]),
    ("igm train model=wgan model.cl", ["model.clip="]),
    ("igm train --cf", ["--cfg"]),
    ("igm train --cfg ", ["job", "hydra", "all"]),
    ("igm sample r", ["run="]),
    ("igm eval ", ["run=", "metrics=", "n=", "features=", "weights=", "device=", "which="]),
    ("igm list d", ["datasets", "divergences"]),
    ("igm completion ", ["bash", "zsh"]),
])
def test_bash_completion(tmp_path, line, expected):
    got = complete(line, tmp_path)
    assert got == expected, (line, got)


def test_bash_completion_offers_groups_and_their_keys(tmp_path):
    got = complete("igm train mod", tmp_path)
    assert got[0] == "model=" and "model.lr=" in got and "model.r1_gamma=" in got
    assert all(word.startswith("model") for word in got)
    assert "p=" in complete("igm estimate ", tmp_path)
    assert "p=" not in complete("igm train ", tmp_path)


def test_bash_completion_with_bash_word_splitting(tmp_path):
    """Real bash splits `model=g` into `model`, `=`, `g`; the function reads COMP_LINE."""
    words = ["igm", "train", "model", "=", "g"]
    assert complete("igm train model=g", tmp_path, words) == ["gan", "gan_minimax", "gmmn"]


def test_bash_completion_of_paths(tmp_path):
    (tmp_path / "outputs" / "2026-01-01").mkdir(parents=True)
    (tmp_path / "outputs" / "x.pt").write_text("")
    assert complete("igm sample run=out", tmp_path) == ["outputs/"]
    assert complete("igm sample run=outputs/", tmp_path) == ["outputs/2026-01-01/",
                                                             "outputs/x.pt"]
    assert complete("igm train resume=outputs/2", tmp_path) == ["outputs/2026-01-01/"]


def test_hydra_shell_completion_flag_prints_our_script(igm):
    script = igm("completion", "bash", check=True).stdout
    assert "complete -F _igm igm" in script
    assert igm("train", "-sc", "install=bash", check=True).stdout == script
    assert igm("completion", "zsh", check=True).stdout.endswith(script)
    bad = igm("train", "-sc", "install=fish")
    assert bad.returncode == 2 and "install=fish" in bad.stderr
    bad = igm("completion", "fish")
    assert bad.returncode == 2 and "unknown shell 'fish'" in bad.stderr


def test_completion_verbs_match_the_cli(capsys):
    """The completion reads the verbs from `igm --help` and the keys from each usage line:
    they must be what the CLI accepts (its error messages list them)."""
    from igm_cli.cli import main
    from igm_cli.completion import usage_keys, verbs

    assert main(["bogus"]) == 2
    assert capsys.readouterr().err.split("choose from: ")[1].strip().split(", ") == verbs()
    for verb in ("sample", "eval", "reconstruct"):
        assert main([verb, "bogus=1"]) == 2
        error = capsys.readouterr().err
        assert error.split("key in: ")[1].strip().split(", ") == usage_keys(verb)


def test_interactive_bash_completes(tmp_path):
    """Readline itself, in an interactive bash on a pseudo-terminal: one TAB completes."""
    pty = pytest.importorskip("pty")
    import select
    import signal
    import time

    command = igm_command()
    if len(command) > 1:
        pytest.skip("needs the installed igm script")
    path = f"{Path(command[0]).parent}:{os.environ['PATH']}"
    env = {**os.environ, "PS1": "$ ", "TERM": "dumb", "PATH": path}
    pid, fd = pty.fork()
    if pid == 0:  # the child: an interactive bash in tmp_path
        os.chdir(tmp_path)
        os.execvpe("bash", ["bash", "--norc", "--noprofile", "-i"], env)

    def type_and_wait(keys: str, expected: str) -> str:
        os.write(fd, keys.encode())
        seen, deadline = "", time.time() + 20
        while expected not in seen and time.time() < deadline:
            if select.select([fd], [], [], 0.1)[0]:
                seen += os.read(fd, 4096).decode(errors="replace")
        return seen

    try:
        type_and_wait('eval "$(igm completion bash)"; echo READY\n', "READY\r\n$ ")
        for typed, completed in [("igm train model=gm", "igm train model=gmmn "),
                                 ("igm estimate divergence=was",
                                  "igm estimate divergence=wasserstein "),
                                 ("igm train train.st", "igm train train.steps="),
                                 ("igm sample r", "igm sample run=")]:
            seen = type_and_wait(typed + "\t", completed)
            assert completed in seen, (typed, seen)
            type_and_wait("\x15", "")  # Ctrl-U: clear the line
    finally:
        os.close(fd)
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
