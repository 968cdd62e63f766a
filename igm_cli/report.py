"""`igm report`: one table of final metrics across runs, grouped by what was swept.

Reads only what runs wrote: each run folder's summary.json (status, final metrics, wall time),
.hydra/overrides.yaml and .hydra/config.yaml (what the run was), metrics.jsonl (the last
evaluation of runs that did not complete) and, for the figure, checkpoints/last.pt. Runs are
grouped by the override keys whose values differ between them (seed excluded: seeds are what
a group averages over); each group's completed runs give mean ± sample std of every metric.
"""

from __future__ import annotations

import csv
import json
import math
import os
import re
import shlex
import statistics
import textwrap
from dataclasses import dataclass, field
from pathlib import Path

from igm_cli.errors import IgmError

OPTIONS = ("out", "by", "metrics", "figure")
METRIC_ORDER = ["modes", "hq", "kl_modes", "mmd", "w1"]
ESTIMATE_FIELDS = ["estimate", "exact", "abs_error", "critic_error"]  # igm estimate's summary
# Never grouped by automatically (by= still can): seeds are what a group averages over; the
# rest (and hydra.*, hydra/*, ckpt.*) say where and how a job ran or logged, not what it
# learned.
NEVER_GROUPED = ("seed", "resume", "device", "train.threads", "train.log_every",
                 "train.print_every", "eval.every", "eval.plot", "eval.grid")
ALWAYS_CONSIDERED = ("model", "dataset")  # grouped by when they differ, overridden or not
FIGURE_POINTS, IMAGES_SHOWN, PANEL_INCHES, DPI = 2000, 16, 3.0, 80
MISSING = "–"


def usage() -> str:
    return ("usage: igm report SWEEP_OR_RUN [MORE ...] [out=DIR] [by=KEY,KEY] "
            "[metrics=NAME,NAME] [figure=true|false]\n"
            "one table of final metrics over every run folder (a folder with summary.json) "
            "found below the\npaths: a row per group of runs that differ only in their seed "
            "(by=: group by these config\nkeys instead), mean ± sample std over its completed "
            "runs. Prints the Markdown table and\nwrites report.md, report.csv and report.png "
            "(final samples per group) into out= (default:\nthe sweep folder given, else the "
            "current folder).")


# ---------------------------------------------------------------------------- reading runs

@dataclass
class Run:
    path: Path
    summary: dict
    config: dict  # the composed config (.hydra/config.yaml); {} when the run has none
    overrides: dict[str, str]  # key -> value as typed on the command line

    @property
    def status(self) -> str:
        return str(self.summary.get("status", "unknown"))

    @property
    def completed(self) -> bool:
        return self.status == "completed"

    @property
    def seed(self):
        return self.summary.get("seed", self.config.get("seed"))

    @property
    def metrics(self) -> dict[str, float]:
        """Final metrics: the summary's `metrics` (igm train), else igm estimate's fields."""
        found = self.summary.get("metrics")
        if not isinstance(found, dict):
            found = {k: self.summary.get(k) for k in ESTIMATE_FIELDS}
        return {k: float(v) for k, v in found.items()
                if isinstance(v, (int, float)) and not isinstance(v, bool)}

    def value(self, key: str) -> str | None:
        """The run's value of a config key, as text: the composed config is canonical (it
        also holds defaults); the summary and the typed overrides are fallbacks."""
        node = self.config
        for part in key.split("."):
            if not isinstance(node, dict) or part not in node:
                break
            node = node[part]
        else:
            return describe(node)
        if key in self.summary and not isinstance(self.summary[key], dict):
            return describe(self.summary[key])
        return self.overrides.get(key)


def describe(value) -> str:
    """A config value as one short text: a config group by its name."""
    if isinstance(value, dict):
        return str(value["name"]) if "name" in value else json.dumps(value, sort_keys=True)
    if isinstance(value, (bool, list)) or value is None:  # as YAML writes them: true, [1, 2]
        return json.dumps(value)
    return str(value)


def natural_key(path: Path) -> list:
    """`2_gan` before `10_gan`: Hydra's job folders in the order of the sweep."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", str(path))]


def find_runs(paths: list[str]) -> list[Run]:
    """Every run folder (a folder with summary.json) at or below each path, each once."""
    folders: dict[Path, None] = {}
    for text in paths:
        given = Path(text).expanduser()
        if not given.exists():
            raise IgmError(f"report path '{text}' does not exist; give run or sweep folders")
        if given.is_file():
            if given.name != "summary.json":
                raise IgmError(f"report path '{text}' is a file; give run or sweep folders")
            given = given.parent
        found = []
        for dirpath, dirnames, filenames in os.walk(given):
            if "summary.json" in filenames:
                found.append(Path(dirpath))
                dirnames.clear()  # a run folder holds no further runs
            else:  # .hydra, .git, .venv: never runs
                dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        if not found:
            raise IgmError(f"no runs found under '{text}' (a run folder holds summary.json)")
        for folder in sorted(found, key=natural_key):
            folders.setdefault(folder.resolve(), None)
    return [read_run(folder) for folder in folders]


def read_run(folder: Path) -> Run:
    summary = read_json(folder / "summary.json")
    if not isinstance(summary, dict):
        summary = {"status": "unreadable", "message": "summary.json is not a JSON object"}
    config = read_yaml(folder / ".hydra" / "config.yaml")
    overrides = {}
    for text in read_yaml(folder / ".hydra" / "overrides.yaml") or []:
        key, _, value = str(text).partition("=")
        overrides[key.lstrip("+~")] = value
    return Run(folder, summary, config if isinstance(config, dict) else {}, overrides)


def read_json(file: Path):
    try:
        return json.loads(file.read_text())
    except (OSError, ValueError):
        return None


def read_yaml(file: Path):
    import yaml

    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    try:
        return yaml.load(file.read_text(), Loader=loader)
    except (OSError, yaml.YAMLError):
        return None


def last_evaluation(run: Run) -> dict | None:
    """The last complete line of metrics.jsonl (a killed run may leave a torn last line)."""
    last = None
    try:
        lines = (run.path / "metrics.jsonl").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict):
            last = record
    return last


# ---------------------------------------------------------------------------- grouping

def is_grouping_key(key: str) -> bool:
    return key not in NEVER_GROUPED and not key.startswith(("hydra.", "hydra/", "ckpt."))


def swept_keys(runs: list[Run]) -> list[str]:
    """Override keys (in command-line order) whose values differ between the runs."""
    candidates: dict[str, None] = {}
    for run in runs:
        candidates.update(dict.fromkeys(run.overrides))
    candidates.update(dict.fromkeys(ALWAYS_CONSIDERED))
    return [key for key in candidates
            if is_grouping_key(key) and len({run.value(key) for run in runs}) > 1]


def check_by(keys: list[str], runs: list[Run]) -> None:
    for key in keys:
        if all(run.value(key) is None for run in runs):
            known = dict.fromkeys([*swept_keys(runs), *(k for r in runs for k in r.config)])
            raise IgmError(f"by key '{key}' is in no run's config; choose from: "
                           f"{', '.join(known)} (or a dotted key such as train.steps)")


@dataclass
class Group:
    values: dict[str, str | None]
    runs: list[Run] = field(default_factory=list)

    @property
    def completed(self) -> list[Run]:
        return [run for run in self.runs if run.completed]

    def label(self) -> str:
        return ", ".join(f"{k}={MISSING if v is None else v}"
                         for k, v in self.values.items()) or "all runs"


def group_runs(runs: list[Run], keys: list[str]) -> list[Group]:
    """Groups in the order their first run was found (a sweep's job order)."""
    groups: dict[tuple, Group] = {}
    for run in runs:
        values = {key: run.value(key) for key in keys}
        groups.setdefault(tuple(values.values()), Group(values)).runs.append(run)
    return list(groups.values())


def metric_names(runs: list[Run], wanted: list[str] | None) -> list[str]:
    found = {name for run in runs for name in run.metrics}
    if wanted is not None:
        for name in wanted:
            if name not in found:
                raise IgmError(f"unknown metric '{name}' in metrics=; choose from: "
                               f"{', '.join(ordered_metrics(found)) or '(none recorded)'}")
        return wanted
    return ordered_metrics(found)


def ordered_metrics(names) -> list[str]:
    known = METRIC_ORDER + ESTIMATE_FIELDS
    return [n for n in known if n in names] + sorted(n for n in names if n not in known)


# ---------------------------------------------------------------------------- statistics

_mode_totals: dict[str, int | None] = {}


def mode_total(run: Run) -> int | None:
    """How many modes the run's data set has (8 for ring8, 25 for grid25, the components of
    gaussian_mixture_1d), from its composed dataset config through the data registry."""
    dataset_cfg = run.config.get("dataset")
    if not isinstance(dataset_cfg, dict):
        return None
    cache_key = json.dumps(dataset_cfg, sort_keys=True)
    if cache_key not in _mode_totals:
        from omegaconf import OmegaConf

        from igm_cli.data import build_dataset

        try:
            data = build_dataset(OmegaConf.create(dataset_cfg), "cpu")
            total = len(data.centers) if getattr(data, "centers", None) is not None else None
        except Exception:  # an unreadable npy file, an unknown name: no total shown
            total = None
        _mode_totals[cache_key] = total
    return _mode_totals[cache_key]


@dataclass
class MetricStats:
    values: list[float]

    @property
    def mean(self) -> float | None:
        return statistics.fmean(self.values) if self.values else None

    @property
    def std(self) -> float | None:
        """Sample standard deviation (n - 1); none for a single run."""
        return statistics.stdev(self.values) if len(self.values) > 1 else None


def metric_stats(group: Group, name: str) -> MetricStats:
    return MetricStats([run.metrics[name] for run in group.completed if name in run.metrics])


def wall_median(group: Group) -> float | None:
    walls = [run.summary["wall_seconds"] for run in group.completed
             if isinstance(run.summary.get("wall_seconds"), (int, float))]
    return statistics.median(walls) if walls else None


def number(x: float, digits: int = 4) -> str:
    """Short text of a number with ``digits`` significant digits (8 not 8.000)."""
    if not math.isfinite(x):
        return str(x)
    return f"{x:.{digits}g}"


def metric_cell(group: Group, name: str) -> str:
    stats = metric_stats(group, name)
    if not stats.values:
        return MISSING
    text = number(stats.mean)
    if name == "modes":
        totals = {mode_total(run) for run in group.completed}
        if len(totals) == 1 and None not in totals:
            text += f"/{totals.pop()}"
    if stats.std is not None:
        text += f" ± {number(stats.std, 2)}"
    if name == "modes" and len(stats.values) > 1:
        text += f" ({number(min(stats.values))}–{number(max(stats.values))})"
    if len(stats.values) < len(group.completed):
        text += f" (n={len(stats.values)})"
    return text


def runs_cell(group: Group) -> str:
    text = f"{len(group.completed)}/{len(group.runs)}"
    others: dict[str, int] = {}
    for run in group.runs:
        if not run.completed:
            others[run.status] = others.get(run.status, 0) + 1
    if others:
        text += " (" + ", ".join(f"{n} {status}" for status, n in others.items()) + ")"
    return text


def wall_cell(group: Group) -> str:
    wall = wall_median(group)
    if wall is None:
        return MISSING
    return f"{wall:.0f}" if wall >= 10 else f"{wall:.1f}"


# ---------------------------------------------------------------------------- outputs

def markdown_table(groups: list[Group], keys: list[str], metrics: list[str]) -> str:
    def row(cells) -> str:
        return "| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |"

    lines = [row([*keys, *metrics, "runs", "wall s"]), row(["---"] * (len(keys) + len(metrics)
                                                                    + 2))]
    for group in groups:
        lines.append(row([*(v if v is not None else MISSING for v in group.values.values()),
                          *(metric_cell(group, name) for name in metrics),
                          runs_cell(group), wall_cell(group)]))
    return "\n".join(lines)


def unfinished_lines(groups: list[Group]) -> list[str]:
    """One line per run that is not averaged: where, what status, why, how far it got."""
    lines = []
    for group in groups:
        for run in group.runs:
            if run.completed:
                continue
            text = f"- `{run.path}` ({group.label()}, seed {run.seed}): {run.status}"
            if run.summary.get("message"):
                text += f": {run.summary['message']}"
            last = last_evaluation(run)
            if last is not None and "step" in last:
                text += f"; last evaluation at step {last['step']}"
            lines.append(text)
    return lines


def csv_columns(keys: list[str], metrics: list[str]) -> list[str]:
    columns = list(keys)
    for name in metrics:
        columns += [f"{name}_mean", f"{name}_std"]
        if name == "modes":
            columns += ["modes_min", "modes_max"]
    return columns + ["n", "completed", "wall_seconds_median"]


def write_csv(groups: list[Group], keys: list[str], metrics: list[str], path: Path) -> None:
    """One row per group; full precision; empty where there is no value."""
    def text(x) -> str:
        return "" if x is None else repr(x)

    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(csv_columns(keys, metrics))
        for group in groups:
            row = ["" if v is None else v for v in group.values.values()]
            for name in metrics:
                stats = metric_stats(group, name)
                row += [text(stats.mean), text(stats.std)]
                if name == "modes":
                    row += [text(min(stats.values, default=None)),
                            text(max(stats.values, default=None))]
            row += [len(group.runs), len(group.completed), text(wall_median(group))]
            writer.writerow(row)


def figure_grid(n_panels: int) -> tuple[int, int]:
    """(rows, columns) of the figure: near-square."""
    columns = max(1, math.ceil(math.sqrt(n_panels)))
    return math.ceil(n_panels / columns), columns


def shown_run(group: Group) -> Run | None:
    """The group's run in the figure: its first completed run, lowest seed."""
    def order(run: Run):
        seed = run.seed if isinstance(run.seed, int) else math.inf
        return seed, natural_key(run.path)

    return min(group.completed, key=order, default=None)


def write_figure(groups: list[Group], path: Path, warn) -> None:
    """Final samples per group, one panel each (PANEL_INCHES square at DPI)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows, columns = figure_grid(len(groups))
    fig, axes = plt.subplots(rows, columns, squeeze=False, dpi=DPI,
                             figsize=(PANEL_INCHES * columns, PANEL_INCHES * rows))
    for ax in axes.flat[len(groups):]:
        ax.axis("off")
    for ax, group in zip(axes.flat, groups):
        run = shown_run(group)
        title = textwrap.fill(group.label(), 44, max_lines=4, placeholder=" …")
        ax.set_title(title + (f"\nseed {run.seed}" if run is not None else ""), fontsize=7)
        note = draw_run(ax, run)
        if note:
            if note.startswith("cannot"):
                warn(f"igm report: figure panel '{group.label()}': {note}")
            ax.text(0.5, 0.5, note, ha="center", va="center", fontsize=7, wrap=True,
                    transform=ax.transAxes)
            ax.set_xticks([])
            ax.set_yticks([])
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)


_real_points: dict[str, object] = {}


def draw_run(ax, run: Run | None) -> str | None:
    """Draw a run's final samples on ``ax``; returns a note instead when it cannot."""
    import torch

    from igm_cli.checkpoint import load_checkpoint
    from igm_cli.evaluate import image_grid
    from igm_cli.plots import draw_samples
    from igm_cli.sampling import load_sampler

    if run is None:
        return "no completed run"
    if not (run.path / "checkpoints" / "last.pt").is_file():
        return "no checkpoint"
    try:
        checkpoint = load_checkpoint(run.path)
        with torch.no_grad():
            n = IMAGES_SHOWN if len(checkpoint["data_shape"]) == 3 else FIGURE_POINTS
            samples = load_sampler(str(run.path), "cpu", checkpoint)(n, 0).float()
    except Exception as exc:  # one unusable checkpoint should not cost the whole report
        return f"cannot sample: {str(exc).splitlines()[0][:120] if str(exc) else exc!r}"
    if samples.dim() == 4:  # images [n, C, H, W]
        grid = image_grid(samples, nrow=math.ceil(math.sqrt(len(samples))))
        ax.imshow(grid.permute(1, 2, 0).numpy())
        ax.set_xticks([])
        ax.set_yticks([])
        return None
    if samples.dim() != 2:
        return f"samples of shape {tuple(samples.shape[1:])}: nothing to draw"
    real = real_points(checkpoint["config"].get("dataset"), len(samples))
    columns = slice(0, 1) if samples.shape[1] == 1 else slice(0, 2)  # >2-D: first two coords
    real = real[:, columns] if real.shape[1] == samples.shape[1] else samples[:0, columns]
    draw_samples(ax, real, samples[:, columns], legend=False)
    ax.tick_params(labelsize=6)
    ax.set_xlabel(", ".join(f"{k} {number(v, 3)}" for k, v in list(run.metrics.items())[:3]),
                  fontsize=7)
    return None


def real_points(dataset_cfg, n: int):
    """``n`` fresh data points of a toy data set (a fixed seed), or none when it cannot be built."""
    import torch

    key = json.dumps(dataset_cfg, sort_keys=True)
    if key not in _real_points:
        from omegaconf import OmegaConf

        from igm_cli.data import build_dataset

        try:
            data = build_dataset(OmegaConf.create(dataset_cfg), "cpu")
            _real_points[key] = data.sample(n, torch.Generator().manual_seed(0)).float()
        except Exception:  # an npy file moved away: draw the samples alone
            _real_points[key] = torch.zeros(0, 0)
    return _real_points[key]


# ---------------------------------------------------------------------------- the command

def parse_args(args: list[str]) -> tuple[list[str], dict]:
    paths, options = [], {"out": None, "by": None, "metrics": None, "figure": "true"}
    for arg in args:
        key, sep, value = arg.partition("=")
        if sep and key in OPTIONS:
            options[key] = value
        elif sep and not Path(arg).exists() and "/" not in key:
            raise IgmError(f"igm report: unknown argument '{arg}'; expected paths and "
                           f"key=value with key in: {', '.join(OPTIONS)}")
        else:
            paths.append(arg)
    if not paths:
        raise IgmError("igm report needs a run or sweep folder (see igm report --help)")
    if options["figure"].lower() not in ("true", "false"):
        raise IgmError(f"figure must be true or false, got '{options['figure']}'")
    options["figure"] = options["figure"].lower() == "true"
    for key in ("by", "metrics"):
        if options[key] is not None:
            options[key] = [n.strip() for n in options[key].strip("[]").split(",") if n.strip()]
            if not options[key]:
                raise IgmError(f"{key}= names no key; e.g. {key}=" +
                               ("model,dataset" if key == "by" else "modes,w1"))
    return paths, options


def output_dir(paths: list[str], out: str | None) -> Path:
    if out is not None:
        folder = Path(out).expanduser()
        if folder.exists() and not folder.is_dir():
            raise IgmError(f"out '{out}' is a file; give a folder")
        return folder
    single = Path(paths[0]).expanduser()
    if len(paths) == 1 and single.is_dir() and not (single / "summary.json").is_file():
        return single  # the sweep folder given
    return Path(".")


def report_command(args: list[str]) -> int:
    import sys

    if "-h" in args or "--help" in args:
        print(usage())
        return 0
    paths, options = parse_args(args)
    out = output_dir(paths, options["out"])
    runs = find_runs(paths)
    if options["by"] is not None:
        check_by(options["by"], runs)
        keys = options["by"]
    else:
        keys = swept_keys(runs) or [k for k in ALWAYS_CONSIDERED
                                    if any(run.value(k) is not None for run in runs)]
    metrics = metric_names(runs, options["metrics"])
    groups = group_runs(runs, keys)

    table = markdown_table(groups, keys, metrics)
    unfinished = unfinished_lines(groups)
    print(table)
    if unfinished:
        print("\nnot averaged:\n" + "\n".join(unfinished))

    out.mkdir(parents=True, exist_ok=True)
    command = " ".join(["igm", "report", *map(shlex.quote, args)])
    text = [f"# igm report\n\n`{command}`: {len(runs)} runs in {len(groups)} groups. "
            "Each cell: mean ± sample standard deviation of the final metric over the group's "
            "completed runs (modes: mean/number of modes ± std (min–max)); runs: "
            "completed/total; wall s: median over completed runs.\n", table]
    if unfinished:
        text += ["\nNot averaged:\n", "\n".join(unfinished)]
    written = ["report.md", "report.csv"]
    if options["figure"]:
        write_figure(groups, out / "report.png", lambda m: print(m, file=sys.stderr))
        text += ["\n![final samples: one run per group, lowest seed](report.png)"]
        written.append("report.png")
    (out / "report.md").write_text("\n".join(text) + "\n")
    write_csv(groups, keys, metrics, out / "report.csv")
    print(f"\nwrote {', '.join(written)} to {out}")
    return 0
