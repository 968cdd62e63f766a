"""`igm VERB ...`: one entry point, one Hydra app per training verb.

`igm train` is a Hydra app (configs/train.yaml). Before Hydra starts, the command line is
checked so that bad input gets one line naming the bad value and its choices, a non-zero exit,
and no file touched: unknown group names, bad numbers, bad paths and bad `resume=` targets.
"""

from __future__ import annotations

import sys
from pathlib import Path

from igm_cli import __version__
from igm_cli.errors import IgmError

EXIT_USAGE, EXIT_DIVERGED = 2, 3

USAGE = f"""usage: igm VERB [ARGS]

igm {__version__}: train, compare and understand implicit generative models.

verbs:
  train    train a model (Hydra app; `igm train --help` lists the config groups)
  estimate estimate a divergence between two known distributions by training a critic
  sample   write samples of a run: igm sample run=DIR n=64 out=grid.png|x.npy [seed=S]
  eval     metrics of a run's checkpoint: igm eval run=DIR metrics=[fid,kid,is] n=10000
  reconstruct  held-out inputs and their reconstructions (Alpha-GAN): igm reconstruct run=DIR
           n=16 out=rec.png|rec.npy
  list     registered models, datasets, archs, divergences: igm list [models|datasets|...]
  completion  shell completion: eval "$(igm completion bash)" (bash; zsh via bashcompinit)

examples:
  igm train                                   # non-saturating GAN on ring8, about a minute
  igm train model=gan_minimax dataset=grid25 train.steps=10000
  igm train -m model=gan,gan_minimax seed=0,1,2
  igm train resume=outputs/2026-11-25/12-00-00_gan_ring8 train.steps=12000
  tensorboard --logdir outputs
"""


def config_dir() -> Path:
    """The shipped configs: inside the installed package, or the checkout's top-level folder."""
    here = Path(__file__).resolve().parent
    installed = here / "configs"
    return installed if (installed / "train.yaml").is_file() else here.parent / "configs"


def fail(message: str) -> int:
    print(f"igm: error: {message}", file=sys.stderr)
    return EXIT_USAGE


def main(argv: list[str] | None = None) -> int:
    from igm_cli import helptext

    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["help"] and len(argv) > 1:  # igm help VERB = igm VERB --help
        argv = [argv[1], "--help"]
    if not argv or argv[0] in ("-h", "--help", "help"):
        try:
            return helptext.emit(USAGE)
        except BrokenPipeError:
            return helptext.reader_gone()
    if argv[0] in ("-V", "--version"):
        print(f"igm {__version__}")
        return 0
    verb, args = argv[0], argv[1:]
    commands = {"train": train_command, "estimate": estimate_command, "sample": sample_command,
                "eval": eval_command, "reconstruct": reconstruct_command, "list": list_command,
                "completion": completion_command}
    if verb not in commands:
        return fail(f"unknown command '{verb}'; choose from: {', '.join(commands)}")
    try:
        return commands[verb](args)
    except IgmError as exc:
        return fail(str(exc))
    except BrokenPipeError:  # `igm list | head -1`: the reader left; no traceback
        return helptext.reader_gone()


# ---------------------------------------------------------------------------- igm list

def list_command(args: list[str]) -> int:
    from igm_cli.helptext import list_command as list_catalog  # no torch: catalog.json

    return list_catalog(args)


def completion_command(args: list[str]) -> int:
    from igm_cli.completion import completion_command as completion

    return completion(args)


# ---------------------------------------------------------------------------- igm sample

def parse_keyvalues(args: list[str], allowed: dict[str, object], verb: str) -> dict:
    values = dict(allowed)
    for arg in args:
        key, sep, value = arg.partition("=")
        if not sep or key not in allowed:
            raise IgmError(f"igm {verb}: unknown argument '{arg}'; "
                           f"expected key=value with key in: {', '.join(allowed)}")
        values[key] = value
    return values


def sample_usage() -> str:
    return ("usage: igm sample run=RUN_DIR_OR_CHECKPOINT n=N out=FILE.npy|FILE.png [seed=0] "
            "[device=cpu]\n"
            "writes N samples of the run's generator (its EMA when it has one): .npy holds an\n"
            "array of shape (N, *data shape), float32; .png an image grid (image data) or a\n"
            "scatter plot over the data (1D/2D data). The same seed gives the same samples.")


def parse_out(value: str) -> Path:
    """`out=` of igm sample / reconstruct: a .npy array or a .png picture."""
    out = Path(value)
    if out.suffix not in (".npy", ".png"):
        raise IgmError(f"out '{out}' must end in .npy or .png; choose from: .npy, .png")
    return out


def parse_int(name: str, value, minimum: int) -> int:
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise IgmError(f"{name} must be an integer >= {minimum}, got '{value}'") from None
    if number < minimum:
        raise IgmError(f"{name} must be an integer >= {minimum}, got {number}")
    return number


def sample_command(args: list[str]) -> int:
    import numpy as np

    from igm_cli.checkpoint import load_checkpoint
    from igm_cli.sampling import load_sampler

    if "-h" in args or "--help" in args:
        print(sample_usage())
        return 0
    opts = parse_keyvalues(args, {"run": None, "n": 1000, "out": None, "seed": 0,
                                  "device": "cpu"}, "sample")
    if opts["run"] is None or opts["out"] is None:
        raise IgmError("igm sample needs run=RUN_DIR and out=FILE.npy (see igm sample --help)")
    n = parse_int("n", opts["n"], 1)
    seed = parse_int("seed", opts["seed"], 0)
    out = parse_out(opts["out"])
    checkpoint = load_checkpoint(opts["run"])
    samples = load_sampler(opts["run"], opts["device"], checkpoint)(n, seed).float().cpu()
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix == ".npy":
        np.save(out, samples.numpy().astype(np.float32))
    else:
        from igm_cli.plots import save_samples_png

        save_samples_png(samples, checkpoint["config"]["dataset"], out)
    print(f"wrote {n} samples of shape {tuple(samples.shape[1:])} to {out}")
    return 0


# ---------------------------------------------------------------------------- igm reconstruct

def reconstruct_usage() -> str:
    return ("usage: igm reconstruct run=RUN_DIR_OR_CHECKPOINT [n=16] out=FILE.png|FILE.npy "
            "[device=cpu]\n"
            "G(E(x)) for the first n held-out inputs x of the run's data set (fresh points with a "
            "fixed seed\nfor toy sets) from a model with an encoder (alpha_gan): .npy holds one "
            "array of shape\n(2, n, *data shape), inputs then reconstructions; .png shows each "
            "input beside its\nreconstruction (images) or arrows from x to G(E(x)) (2D points).")


def reconstruct_command(args: list[str]) -> int:
    import numpy as np

    from igm_cli.sampling import load_reconstructor

    if "-h" in args or "--help" in args:
        print(reconstruct_usage())
        return 0
    opts = parse_keyvalues(args, {"run": None, "n": 16, "out": None, "device": "cpu"},
                           "reconstruct")
    if opts["run"] is None or opts["out"] is None:
        raise IgmError("igm reconstruct needs run=RUN_DIR and out=FILE.png or FILE.npy "
                       "(see igm reconstruct --help)")
    n = parse_int("n", opts["n"], 1)
    out = parse_out(opts["out"])
    x, x_rec = load_reconstructor(opts["run"], opts["device"])(n)
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix == ".npy":
        np.save(out, np.stack([x.float().cpu().numpy(), x_rec.float().cpu().numpy()]))
    else:
        from igm_cli.plots import save_reconstructions_png

        save_reconstructions_png(x, x_rec, out)
    print(f"wrote {len(x)} inputs and their reconstructions to {out}")
    return 0


# ---------------------------------------------------------------------------- igm eval

def eval_usage() -> str:
    return ("usage: igm eval run=RUN_DIR_OR_CHECKPOINT [metrics=[fid,kid,is]] [n=10000] "
            "[features=NAME] [weights=PATH] [device=auto]\n"
            "computes metrics of a checkpoint's generator (its EMA when it has one) against the "
            "data set\nit was trained on, prints them, and appends them to the run's "
            "metrics.jsonl and TensorBoard\n(eval/NAME at the checkpoint's step). Image runs: "
            "fid, kid, is on `features`\n(default: the run's eval.features); toy runs: modes, "
            "hq, kl_modes, mmd, w1.")


def eval_command(args: list[str]) -> int:
    from igm_cli.evaluate import evaluate_run

    if "-h" in args or "--help" in args:
        print(eval_usage())
        return 0
    opts = parse_keyvalues(args, {"run": None, "metrics": None, "n": 10000, "features": None,
                                  "weights": None, "device": "auto"}, "eval")
    if opts["run"] is None:
        raise IgmError("igm eval needs run=RUN_DIR (see igm eval --help)")
    n = parse_int("n", opts["n"], 2)
    names = None
    if opts["metrics"] is not None:
        names = [m.strip() for m in opts["metrics"].strip("[]").split(",") if m.strip()]
    metrics = evaluate_run(opts["run"], names, n, opts["features"], opts["weights"],
                           opts["device"])
    print("  ".join(f"{k} {v:.6g}" for k, v in metrics.items()))
    return 0


# ---------------------------------------------------------------------------- igm train

STATUSES: list[str] = []  # one per finished job of this process (multirun runs several)


def train_command(args: list[str]) -> int:
    return hydra_command("train", args, _train_task)


def estimate_command(args: list[str]) -> int:
    return hydra_command("estimate", args, _estimate_task)


def hydra_command(verb: str, args: list[str], task) -> int:
    from igm_cli.helptext import answer_without_hydra

    answered = answer_without_hydra(verb, args)  # --help and -sc: no Hydra, no torch
    if answered is not None:
        return answered
    from hydra._internal.utils import get_args_parser

    try:
        parsed = get_args_parser().parse_args(args)
    except SystemExit as exc:  # argparse already printed its one-line usage error
        return int(exc.code or 0)
    overrides = prepare_overrides(verb, parsed.overrides, parsed)
    hydra_args = [a for a in args if a not in parsed.overrides] + overrides
    STATUSES.clear()
    run_hydra_app(verb, hydra_args, task)
    if "failed" in STATUSES:
        return EXIT_USAGE
    if "diverged" in STATUSES:
        return EXIT_DIVERGED
    return 130 if "interrupted" in STATUSES else 0


def prepare_overrides(verb: str, overrides: list[str], parsed) -> list[str]:
    """Check names and paths before Hydra makes a run folder; on resume, replay the run's
    own overrides first so that the resumed config is the original one plus what is new."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    parser = OverridesParser.create()
    try:
        parsed_overrides = parser.parse_overrides(overrides)
    except HydraException as exc:
        raise IgmError(str(exc).strip().splitlines()[0]) from None
    extra_dirs = [Path(parsed.config_dir)] if parsed.config_dir else []
    groups = {folder.name for folder in config_dir().iterdir() if folder.is_dir()}
    for override in parsed_overrides:
        key = override.key_or_group.lstrip("+~")
        if key in groups and not override.is_delete():
            names = (list(override.sweep_string_iterator()) if override.is_sweep_override()
                     else [override.get_value_element_as_str()])
            choices = group_options(key, extra_dirs)
            for name in names:
                if name not in choices:
                    raise IgmError(f"unknown {key} '{name}'; choose from: {', '.join(choices)}")
    absolute = [absolutise_path(o, ov) for o, ov in zip(overrides, parsed_overrides)]
    resume = next((ov for ov in parsed_overrides if ov.key_or_group == "resume"), None)
    if resume is not None and resume.value() is not None:
        if parsed.multirun:
            raise IgmError("resume= continues one run; it cannot be combined with -m")
        absolute = resume_overrides(resume, parsed_overrides, absolute)
    is_plain_run = not (parsed.multirun or parsed.help or parsed.hydra_help or parsed.cfg
                        or parsed.info or parsed.shell_completion)
    if is_plain_run:
        check_composed(verb, absolute, parsed)
    return absolute


def group_options(group: str, extra_dirs: list[Path]) -> list[str]:
    names = set()
    for folder in [config_dir(), *extra_dirs]:
        names.update(p.stem for p in (folder / group).glob("*.yaml"))
    return sorted(names)


def absolutise_path(text: str, override) -> str:
    """`dataset.path` means the folder the user typed it in, also when the run is resumed."""
    if override.key_or_group == "dataset.path" and not override.is_sweep_override():
        value = override.value()
        if isinstance(value, str) and value:
            return f"dataset.path={Path(value).expanduser().resolve()}"
    return text


def resume_overrides(resume, parsed_overrides, overrides: list[str]) -> list[str]:
    from igm_cli.checkpoint import load_checkpoint, resolve_checkpoint, run_dir_of

    checkpoint_file = resolve_checkpoint(str(resume.value())).resolve()
    checkpoint = load_checkpoint(checkpoint_file)
    saved_model = checkpoint["config"]["model"]["name"]
    for override in parsed_overrides:
        if override.key_or_group == "model" and override.value() != saved_model:
            raise IgmError(f"checkpoint '{resume.value()}' is of model '{saved_model}', "
                           f"not '{override.value()}'")
    new_keys = {ov.key_or_group for ov in parsed_overrides}
    from hydra.core.override_parser.overrides_parser import OverridesParser

    saved = [o for o, ov in zip(checkpoint["overrides"],
                                OverridesParser.create().parse_overrides(checkpoint["overrides"]))
             if ov.key_or_group not in new_keys]
    replaced = [f"resume={checkpoint_file}" if ov.key_or_group == "resume" else o
                for o, ov in zip(overrides, parsed_overrides)]
    if "hydra.run.dir" not in new_keys:  # continue in the run's own folder
        replaced.append(f"hydra.run.dir={run_dir_of(checkpoint_file)}")
    return saved + replaced


def check_composed(verb: str, overrides: list[str], parsed) -> None:
    """Compose the config as Hydra will and run every check that needs no training."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    job_overrides = [o for o in overrides if not o.lstrip("+~").startswith("hydra.")]
    try:
        with initialize_config_dir(str(config_dir()), version_base="1.3"):
            cfg = compose(parsed.config_name or verb, overrides=job_overrides)
    except (HydraException, OmegaConfBaseException) as exc:
        raise IgmError(" ".join(str(exc).split())[:300]) from None
    finally:
        GlobalHydra.instance().clear()
    if verb == "estimate":
        from igm_cli.estimate import check_estimate_config

        check_estimate_config(cfg)
        return
    from igm_cli.build import check_config

    check_config(cfg)
    if cfg.resume:
        from igm_cli.trainer import load_resume

        load_resume(cfg)


def run_hydra_app(config_name: str, args: list[str], task) -> None:
    import hydra

    app = hydra.main(config_path=str(config_dir()), config_name=config_name,
                     version_base="1.3")(task)
    saved_argv = sys.argv
    sys.argv = [f"igm {config_name}", *args]
    try:
        app()
    finally:
        sys.argv = saved_argv


def _train_task(cfg) -> float | None:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    from igm_cli.trainer import train

    hydra_cfg = HydraConfig.get()
    run_dir = Path(hydra_cfg.runtime.output_dir)
    try:
        summary = train(cfg, run_dir, list(hydra_cfg.overrides.task))
    except IgmError as exc:
        if hydra_cfg.mode == RunMode.MULTIRUN:  # report, and let the other jobs run
            print(f"igm: error: job {hydra_cfg.job.num}: {exc}", file=sys.stderr)
            STATUSES.append("failed")
            return None
        raise SystemExit(fail(str(exc))) from None
    STATUSES.append(summary["status"])
    if summary["status"] == "interrupted":
        raise SystemExit(130 if "SIGINT" in summary.get("message", "") else 143)
    return summary["metrics"].get(cfg.eval.sweep_metric)


def _estimate_task(cfg) -> float | None:
    from hydra.core.hydra_config import HydraConfig

    from igm_cli.estimate import estimate

    try:
        summary = estimate(cfg, Path(HydraConfig.get().runtime.output_dir))
    except IgmError as exc:
        raise SystemExit(fail(str(exc))) from None
    STATUSES.append(summary["status"])
    return summary["estimate"]
