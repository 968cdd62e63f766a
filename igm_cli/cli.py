"""`igm VERB ...`: one entry point, one Hydra app per training verb.

`igm train` and `igm estimate` are Hydra apps (configs/train.yaml, configs/estimate.yaml).
Before Hydra starts, the command line is checked so that bad input gets one line naming the bad
value and its choices, a non-zero exit, and no file touched: unknown group names, bad values,
bad paths and bad `resume=` targets (a checkpoint that does not fit is refused before Hydra
writes its config). The run folder is chosen, created and locked here too, so that Hydra,
the trainer and every rank of a multi-process run agree on it.
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
  report   table of final metrics across runs, grouped by what was swept:
           igm report SWEEP_OR_RUNS... [out=DIR] [by=KEY,KEY] [metrics=NAME,NAME]
  completion  shell completion: eval "$(igm completion bash)" (bash; zsh via bashcompinit)

examples:
  igm train                                   # non-saturating GAN on ring8, under a minute
  igm train model=gan_minimax dataset=grid25 train.steps=10000
  igm train -m model=gan,gan_minimax seed=0,1,2
  igm train resume=outputs/2026-11-25/12-00-00_gan_ring8_seed0 train.steps=12000
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
                "report": report_command, "completion": completion_command}
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


def report_command(args: list[str]) -> int:
    from igm_cli.report import report_command as report

    return report(args)


# ---------------------------------------------------------------------------- key=value verbs

def parse_keyvalues(args: list[str], allowed: dict[str, object], verb: str) -> dict:
    values = dict(allowed)
    for arg in args:
        key, sep, value = arg.partition("=")
        if not sep or key not in allowed:
            raise IgmError(f"igm {verb}: unknown argument '{arg}'; "
                           f"expected key=value with key in: {', '.join(allowed)}")
        values[key] = value
    return values


def parse_out(value: str) -> Path:
    """`out=` of igm sample / reconstruct: a .npy array or a .png picture, in a folder that
    exists and can be written (``~`` expanded)."""
    import os

    out = Path(os.path.expanduser(value))
    if out.suffix not in (".npy", ".png"):
        raise IgmError(f"out '{value}' must end in .npy or .png; choose from: .npy, .png")
    folder = out.parent if str(out.parent) else Path(".")
    if not folder.is_dir():
        raise IgmError(f"out '{value}': folder '{folder}' does not exist; create it first")
    if not os.access(folder, os.W_OK) or (out.exists() and not os.access(out, os.W_OK)):
        raise IgmError(f"out '{value}': '{out}' cannot be written (permission denied)")
    return out


def parse_int(name: str, value, minimum: int) -> int:
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise IgmError(f"{name} must be an integer >= {minimum}, got '{value}'") from None
    if number < minimum:
        raise IgmError(f"{name} must be an integer >= {minimum}, got {number}")
    return number


def write_output(out: Path, write) -> None:
    """Run ``write(out)``; an OS error (full disk, permissions) is one line."""
    try:
        write(out)
    except OSError as exc:
        raise IgmError(f"could not write '{out}': {exc.strerror or exc}") from None


def sample_usage() -> str:
    return ("usage: igm sample run=RUN_DIR_OR_CHECKPOINT n=N out=FILE.npy|FILE.png [seed=0] "
            "[device=cpu] [which=last|best]\n"
            "writes N samples of the run's generator (its EMA when it has one): .npy holds an\n"
            "array of shape (N, *data shape), float32; .png an image grid (image data) or a\n"
            "scatter plot over the data (1D/2D data). The same seed gives the same samples on\n"
            "every device. which=best takes checkpoints/best.pt (ckpt.keep_best).")


def sample_command(args: list[str]) -> int:
    import numpy as np

    from igm_cli.checkpoint import load_checkpoint
    from igm_cli.sampling import load_sampler

    if "-h" in args or "--help" in args:
        print(sample_usage())
        return 0
    opts = parse_keyvalues(args, {"run": None, "n": 1000, "out": None, "seed": 0,
                                  "device": "cpu", "which": "last"}, "sample")
    if opts["run"] is None or opts["out"] is None:
        raise IgmError("igm sample needs run=RUN_DIR and out=FILE.npy (see igm sample --help)")
    n = parse_int("n", opts["n"], 1)
    seed = parse_int("seed", opts["seed"], 0)
    out = parse_out(opts["out"])
    checkpoint = load_checkpoint(opts["run"], which=opts["which"])
    samples = load_sampler(opts["run"], opts["device"], checkpoint)(n, seed).float().cpu()
    if out.suffix == ".npy":
        write_output(out, lambda f: np.save(f, samples.numpy().astype(np.float32)))
    else:
        from igm_cli.plots import save_samples_png

        write_output(out, lambda f: save_samples_png(samples, checkpoint["config"]["dataset"], f))
    print(f"wrote {n} samples of shape {tuple(samples.shape[1:])} to {out}")
    return 0


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
    if out.suffix == ".npy":
        pairs = np.stack([x.float().cpu().numpy(), x_rec.float().cpu().numpy()])
        write_output(out, lambda f: np.save(f, pairs))
    else:
        from igm_cli.plots import save_reconstructions_png

        write_output(out, lambda f: save_reconstructions_png(x, x_rec, f))
    print(f"wrote {len(x)} inputs and their reconstructions to {out}")
    return 0


def eval_usage() -> str:
    return ("usage: igm eval run=RUN_DIR_OR_CHECKPOINT [metrics=[fid,kid,is]] [n=10000] "
            "[features=NAME] [weights=PATH] [device=auto] [which=last|best]\n"
            "computes metrics of a checkpoint's generator (its EMA when it has one) against the "
            "data set\nit was trained on, prints them, and appends them to the run's "
            "metrics.jsonl and TensorBoard\n(eval/NAME at the checkpoint's step). Image runs: "
            "fid, kid, is on `features`\n(default: the run's eval.features; Inception weights "
            "from weights= or the torch hub cache);\ntoy runs: modes, hq, kl_modes, mmd, w1.")


def eval_command(args: list[str]) -> int:
    import os

    from igm_cli.evaluate import evaluate_run

    if "-h" in args or "--help" in args:
        print(eval_usage())
        return 0
    opts = parse_keyvalues(args, {"run": None, "metrics": None, "n": 10000, "features": None,
                                  "weights": None, "device": "auto", "which": "last"}, "eval")
    if opts["run"] is None:
        raise IgmError("igm eval needs run=RUN_DIR (see igm eval --help)")
    n = parse_int("n", opts["n"], 2)
    names = None
    if opts["metrics"] is not None:
        names = [m.strip() for m in opts["metrics"].strip("[]").split(",") if m.strip()]
    weights = os.path.expanduser(opts["weights"]) if opts["weights"] else None
    metrics = evaluate_run(opts["run"], names, n, opts["features"], weights, opts["device"],
                           which=opts["which"])
    print("  ".join(f"{k} {v:.6g}" for k, v in metrics.items()))
    return 0


# ---------------------------------------------------------------------------- igm train

RESULTS: list[dict] = []  # the summary of each job this process ran (multirun runs several)


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

    from igm_cli import rundir
    from igm_cli.sweep import run_reporting  # also registers the job folder names' resolver

    args = rundir.rewrite_path_args(args)
    try:
        parsed = get_args_parser().parse_args(args)
    except SystemExit as exc:  # argparse already printed its one-line usage error
        return int(exc.code or 0)
    overrides, launch = prepare_overrides(verb, parsed.overrides, parsed)
    hydra_args = [a for a in args if a not in parsed.overrides] + overrides
    if launch:  # train.devices=N: start N ranks that run this same command
        return launch_ranks(launch, hydra_args)
    RESULTS.clear()
    sweep_code = run_reporting(lambda: run_hydra_app(verb, hydra_args, task))
    if sweep_code is not None:  # a multirun: what its job folders' summaries say
        return sweep_code
    return exit_code(RESULTS)


def exit_code(results: list[dict]) -> int:
    """One code for the jobs this process ran: a failure wins, then a divergence, then an
    interruption; 0 when all completed (or nothing ran, e.g. --cfg)."""
    codes = [r.get("exit_code", 0) for r in results]
    for code in (EXIT_USAGE, 1, EXIT_DIVERGED, 130, 143):
        if code in codes:
            return code
    return 0


def parse_overrides(overrides: list[str]):
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    try:
        return OverridesParser.create().parse_overrides(overrides)
    except HydraException as exc:
        raise IgmError(" ".join(str(exc).split())[:300]) from None


def prepare_overrides(verb: str, overrides: list[str], parsed) -> tuple[list[str], int]:
    """Check names, values and paths before Hydra makes a run folder; on resume, replay the
    run's own overrides first so that the resumed config is the original one plus what is new.
    Returns (overrides for Hydra, number of ranks igm must start itself or 0)."""
    from igm_cli import parallel

    parsed_overrides = parse_overrides(overrides)
    check_group_names(parsed_overrides, parsed)
    resume = next((ov for ov in parsed_overrides if ov.key_or_group == "resume"), None)
    if resume is not None and resume.value() is not None:
        if parsed.multirun:
            raise IgmError("resume= continues one run; it cannot be combined with -m")
        overrides = resume_overrides(resume, parsed_overrides, overrides)
        parsed_overrides = parse_overrides(overrides)
        check_group_names(parsed_overrides, parsed)
    is_plain_run = not (parsed.multirun or parsed.help or parsed.hydra_help or parsed.cfg
                        or parsed.info or parsed.shell_completion)
    if parsed.multirun and parallel.RANKS.distributed:
        raise IgmError("-m runs one process per job; it cannot run under torchrun")
    if not is_plain_run:
        return overrides, 0
    cfg = check_composed(verb, overrides, parsed)
    if verb != "train":
        return overrides, 0
    devices = cfg.train.get("devices", 1)
    if devices > 1 and not parallel.RANKS.distributed:
        run_dir = choose_run_dir(cfg, overrides, lock=False)
        return [*without_key(overrides, "hydra.run.dir"), f"hydra.run.dir={quote_path(run_dir)}"], \
            devices
    run_dir = agree_on_run_dir(cfg, overrides)
    overrides = [*without_key(overrides, "hydra.run.dir"), f"hydra.run.dir={quote_path(run_dir)}"]
    if not parallel.RANKS.main:  # rank 0 alone writes the run folder
        overrides += ["hydra.output_subdir=null", "hydra/job_logging=disabled",
                      "hydra/hydra_logging=disabled"]
    return overrides, 0


def quote_path(path: Path) -> str:
    from igm_cli.rundir import quote

    return quote(str(path))


def without_key(overrides: list[str], key: str) -> list[str]:
    return [o for o in overrides if o.partition("=")[0] != key]


def check_group_names(parsed_overrides, parsed) -> None:
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


def group_options(group: str, extra_dirs: list[Path]) -> list[str]:
    names = set()
    for folder in [config_dir(), *extra_dirs]:
        names.update(p.stem for p in (folder / group).glob("*.yaml"))
    return sorted(names)


# Keys a checkpoint's stored overrides may set: igm's own config, never Hydra's.
REPLAYABLE_ROOTS = ("model", "dataset", "arch", "divergence", "seed", "device", "train", "eval",
                    "ckpt", "recipe", "experiment", "debug")


def replayable(stored: list[str]) -> list[str]:
    """A checkpoint's stored overrides, validated like command-line input: only plain
    assignments of igm's own keys (no hydra.*, no +/++/~ forms, no @package, no _target_);
    anything else means the file was not written by igm, and the resume is refused.
    ``eval.weights`` is not replayed: a weights path is never taken from a checkpoint."""
    if not isinstance(stored, list) or not all(isinstance(s, str) for s in stored):
        raise IgmError("the checkpoint's stored overrides are not a list of strings; "
                       "refusing to replay them")
    kept = []
    for text, override in zip(stored, parse_overrides(stored)):
        key = override.key_or_group
        bad = (key.split(".")[0].split("/")[0] not in REPLAYABLE_ROOTS
               or override.is_add() or override.is_force_add() or override.is_delete()
               or override.package is not None or "_target_" in key or "_target_" in text
               or override.is_sweep_override())
        if bad:
            raise IgmError(f"the checkpoint stores the override '{text[:120]}', which is not "
                           "an igm config key; refusing to replay it (was the file written "
                           "by igm?)")
        if key != "eval.weights":
            kept.append(text)
    return kept


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
    stored = replayable(checkpoint.get("overrides", []))
    saved = [o for o, ov in zip(stored, parse_overrides(stored)) if ov.key_or_group not in new_keys]
    replaced = [f"resume={quote_path(checkpoint_file)}" if ov.key_or_group == "resume" else o
                for o, ov in zip(overrides, parsed_overrides)]
    if "hydra.run.dir" not in new_keys:  # continue in the run's own folder
        replaced.append(f"hydra.run.dir={quote_path(run_dir_of(checkpoint_file))}")
    return saved + replaced


def check_composed(verb: str, overrides: list[str], parsed):
    """Compose the config as Hydra will and run every check that needs no training; returns
    the composed config (with its ``hydra`` node)."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    try:
        with initialize_config_dir(str(config_dir()), version_base="1.3"):
            cfg = compose(parsed.config_name or verb, overrides=overrides,
                          return_hydra_config=True)
    except (HydraException, OmegaConfBaseException) as exc:
        raise IgmError(" ".join(str(exc).split())[:300]) from None
    finally:
        GlobalHydra.instance().clear()
    job = job_config(cfg)
    if verb == "estimate":
        from igm_cli.estimate import check_estimate_config

        check_estimate_config(job)
        return cfg
    from igm_cli.build import check_config

    check_config(job)
    if job.resume:
        from igm_cli.trainer import check_resume

        check_resume(job)
    return cfg


def job_config(cfg):
    """The composed config without its ``hydra`` node (what the task function receives)."""
    from omegaconf import OmegaConf, open_dict

    job = OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"]) if "hydra" in cfg else cfg
    with open_dict(job):
        return job


def choose_run_dir(cfg, overrides: list[str], lock: bool = True) -> Path:
    """The run folder, created (and locked unless ``lock`` is false): the one given with
    hydra.run.dir (empty, or a run being resumed), else a new, unique name from the default
    pattern outputs/DATE/TIME_MODEL_DATASET_seedS."""
    from omegaconf import OmegaConf

    from igm_cli import rundir

    given = any(o.partition("=")[0] == "hydra.run.dir" for o in overrides)
    try:
        pattern = OmegaConf.select(cfg, "hydra.run.dir")
    except Exception as exc:  # an interpolation that only Hydra's runtime can resolve
        raise IgmError(f"hydra.run.dir: {' '.join(str(exc).split())[:200]}") from None
    folder = Path(pattern).absolute()
    if given:
        if rundir.holds_files(folder) and not cfg.resume:
            raise IgmError(f"run folder '{folder}' already holds files; choose an empty folder, "
                           f"or continue that run with resume={folder}")
        folder.mkdir(parents=True, exist_ok=True)
    else:
        folder = rundir.unique_dir(folder)
    if lock:
        rundir.lock(folder)
    return folder


def agree_on_run_dir(cfg, overrides: list[str]) -> Path:
    """Rank 0 chooses, creates and locks the run folder; with several ranks (torchrun) the
    others learn it from rank 0 (and fail with rank 0's reason when it could not)."""
    from igm_cli import parallel
    from igm_cli.build import resolve_device

    if not parallel.RANKS.distributed:
        return choose_run_dir(cfg, overrides)
    parallel.init_process_group(resolve_device(cfg.device))
    text, error = None, None
    if parallel.RANKS.main:
        try:
            text = str(choose_run_dir(cfg, overrides))
        except IgmError as exc:
            text, error = "!" + str(exc), exc
    text = parallel.broadcast_text(text)
    if error is not None:
        raise error
    if text.startswith("!"):
        raise IgmError(text[1:])
    return Path(text)


def launch_ranks(n: int, hydra_args: list[str]) -> int:
    """`igm train train.devices=N`: N processes on this machine through torch's elastic launcher
    (what torchrun uses), each running this command as one rank; the run's summary gives the
    exit code."""
    import json
    import uuid

    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    run_dir = next(Path(a.partition("=")[2].strip("'")) for a in hydra_args
                   if a.startswith("hydra.run.dir="))
    config = LaunchConfig(min_nodes=1, max_nodes=1, nproc_per_node=n, run_id=str(uuid.uuid4()),
                          rdzv_backend="c10d", rdzv_endpoint="localhost:0", max_restarts=0,
                          monitor_interval=0.1)
    try:
        elastic_launch(config, entrypoint=sys.executable)("-m", "igm_cli", "train", *hydra_args)
    except ChildFailedError:
        pass  # the summary says what happened
    summary_file = run_dir / "summary.json"
    if not summary_file.exists():
        return 1
    return json.loads(summary_file.read_text()).get("exit_code", 1)


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

    from igm_cli.evaluate import sweep_metric
    from igm_cli.trainer import train

    hydra_cfg = HydraConfig.get()
    run_dir = Path(hydra_cfg.runtime.output_dir)
    summary = train(cfg, run_dir, list(hydra_cfg.overrides.task))
    RESULTS.append(summary)
    if summary["status"] == "failed" and hydra_cfg.mode == RunMode.MULTIRUN:
        print(f"igm: error: job {hydra_cfg.job.num}: {summary.get('message', '')}",
              file=sys.stderr)
    elif summary["status"] == "failed":
        print(f"igm: error: {summary.get('message', '')}", file=sys.stderr)
    name = sweep_metric(cfg, cfg.dataset.name in _image_sets())
    value = summary.get("metrics", {}).get(name)
    return float(value) if value is not None else float("nan")  # a sweeper skips a NaN trial


def _image_sets():
    from igm_cli.data.images import IMAGE_SETS

    return IMAGE_SETS


def _estimate_task(cfg) -> float | None:
    from hydra.core.hydra_config import HydraConfig

    from igm_cli.estimate import estimate

    try:
        summary = estimate(cfg, Path(HydraConfig.get().runtime.output_dir))
    except IgmError as exc:
        raise SystemExit(fail(str(exc))) from None
    RESULTS.append({"exit_code": EXIT_DIVERGED if summary["status"] == "diverged" else 0})
    return summary["estimate"]
