"""`igm report`: final metrics across runs, grouped by what was swept, from real run folders."""

import csv
import json
import shutil
import statistics

import pytest
import torch
from conftest import run_igm
from PIL import Image

from igm_cli.errors import IgmError
from igm_cli.report import DPI, PANEL_INCHES, report_command

# A 3-component 1-D mixture: the mode total (3) must come from the run's config, and a few
# steps without EMA already find every mode, so the metrics are not all zero.
TRAIN = ["dataset=gaussian_mixture_1d", "dataset.locs=[-3,0,3]", "dataset.scales=[0.2,0.2,0.2]",
         "dataset.weights=[0.25,0.5,0.25]", "model.ema=0", "train.steps=25", "eval.every=25",
         "eval.n_samples=300", "train.log_every=5", "train.print_every=25"]
METRICS = ["modes", "hq", "kl_modes", "mmd", "w1", "coverage", "density", "precision", "recall"]
MODELS = ["gan", "gan_minimax"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A real sweep (2 models x 2 seeds) and one diverged run, made once by the CLI."""
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("report")
    run_igm(["train", "-m", f"model={','.join(MODELS)}", "seed=0,1", *TRAIN,
             f"hydra.sweep.dir={root / 'sweep'}"], root, check=True)
    diverged = run_igm(["train", "model=gan", "model.lr=1e30", *TRAIN,
                        f"hydra.run.dir={root / 'diverged'}"], root)
    assert diverged.returncode == 3, diverged.stderr
    return root


def summaries(folder):
    return [json.loads(f.read_text()) for f in sorted(folder.glob("*/summary.json"))]


def table_rows(text):
    """{first cell: {column: cell}} of the first Markdown table in ``text``."""
    lines = [line for line in text.splitlines() if line.startswith("|")]
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    rows = {}
    for line in lines[2:]:
        cells = [c.strip() for c in line.strip("|").split("|")]
        rows[cells[0]] = dict(zip(header, cells))
    return header, rows


def expected_cell(name, values, total=None):
    """The cell text the report promises: mean (4 significant digits), /modes, ± sample std
    (2 digits), (min–max) for mode counts."""
    text = f"{statistics.fmean(values):.4g}" + (f"/{total}" if total else "")
    if len(values) > 1:
        text += f" ± {statistics.stdev(values):.2g}"
        if name == "modes":
            text += f" ({min(values):g}–{max(values):g})"
    return text


def test_table_csv_and_figure_of_a_sweep(runs, capsys):
    sweep = runs / "sweep"
    assert report_command([str(sweep)]) == 0
    header, rows = table_rows(capsys.readouterr().out)
    assert header == ["model", *METRICS, "runs", "wall s"]  # seed is averaged, not grouped
    assert sorted(rows) == MODELS
    by_model = {m: [s for s in summaries(sweep) if s["model"] == m] for m in MODELS}
    for model, group in by_model.items():
        assert rows[model]["runs"] == "2/2"
        for name in METRICS:
            values = [s["metrics"][name] for s in group]
            assert rows[model][name] == expected_cell(name, values, 3 if name == "modes" else None)
        walls = [s["wall_seconds"] for s in group]
        assert float(rows[model]["wall s"]) == pytest.approx(statistics.median(walls), abs=0.06)

    # report.md and report.csv go into the sweep folder given; the CSV holds the same numbers
    assert table_rows((sweep / "report.md").read_text())[1] == rows
    assert "igm report " in (sweep / "report.md").read_text()
    with open(sweep / "report.csv", newline="") as f:
        csv_rows = {row["model"]: row for row in csv.DictReader(f)}
    assert sorted(csv_rows) == MODELS
    for model, group in by_model.items():
        row = csv_rows[model]
        assert (row["n"], row["completed"]) == ("2", "2")
        for name in METRICS:
            values = [s["metrics"][name] for s in group]
            assert float(row[f"{name}_mean"]) == pytest.approx(statistics.fmean(values), rel=1e-12)
            assert float(row[f"{name}_std"]) == pytest.approx(statistics.stdev(values), rel=1e-12,
                                                              abs=1e-15)
        modes = [s["metrics"]["modes"] for s in group]
        assert (float(row["modes_min"]), float(row["modes_max"])) == (min(modes), max(modes))
        assert float(row["wall_seconds_median"]) == pytest.approx(
            statistics.median(s["wall_seconds"] for s in group))

    # one panel per group (2 groups: 1 row x 2 columns), each PANEL_INCHES square at DPI
    with Image.open(sweep / "report.png") as image:
        image.load()
        assert image.size == (round(2 * PANEL_INCHES * DPI), round(PANEL_INCHES * DPI))
        assert len(image.getcolors(1 << 24)) > 10  # something was drawn, not a blank page


def test_a_diverged_run_counts_in_runs_but_not_in_the_means(runs, capsys, tmp_path):
    sweep, diverged = runs / "sweep", runs / "diverged"
    assert json.loads((diverged / "summary.json").read_text())["status"] == "diverged"

    # automatic grouping: model.lr differs between the runs, so it is a column of its own
    assert report_command([str(sweep), str(diverged), f"out={tmp_path}", "figure=false"]) == 0
    out = capsys.readouterr().out
    lines = [line for line in out.splitlines() if line.startswith("|")]
    assert lines[0].startswith("| model | model.lr | modes |")
    assert "| gan | 1e+30 |" + " – |" * len(METRICS) + " 0/1 (1 diverged) | – |" in lines
    assert f"`{diverged}`" in out and "diverged at step" in out  # listed with its message
    assert not (tmp_path / "report.png").exists()

    # by=model: the diverged gan run joins the two completed ones, which alone are averaged
    assert report_command([str(sweep), str(diverged), "by=model", f"out={tmp_path}"]) == 0
    header, rows = table_rows(capsys.readouterr().out)
    assert header[0] == "model" and "model.lr" not in header
    assert rows["gan"]["runs"] == "2/3 (1 diverged)"
    assert rows["gan_minimax"]["runs"] == "2/2"
    completed = [s["metrics"]["w1"] for s in summaries(sweep) if s["model"] == "gan"]
    assert rows["gan"]["w1"] == expected_cell("w1", completed)
    with open(tmp_path / "report.csv", newline="") as f:
        row = next(r for r in csv.DictReader(f) if r["model"] == "gan")
    assert (row["n"], row["completed"]) == ("3", "2")
    assert float(row["w1_mean"]) == pytest.approx(statistics.fmean(completed), rel=1e-12)


def test_explicit_by_and_metrics(runs, capsys, tmp_path):
    sweep = runs / "sweep"
    assert report_command([str(sweep), "by=seed", "metrics=w1,modes", f"out={tmp_path}",
                           "figure=false"]) == 0
    header, rows = table_rows(capsys.readouterr().out)
    assert header == ["seed", "w1", "modes", "runs", "wall s"]
    for seed in (0, 1):  # each seed's group holds one run of each model
        values = [s["metrics"]["w1"] for s in summaries(sweep) if s["seed"] == seed]
        assert rows[str(seed)]["w1"] == expected_cell("w1", values)
        assert rows[str(seed)]["runs"] == "2/2"


def test_hand_made_runs_give_hand_computed_cells(tmp_path, capsys):
    """Three ring8 runs with known final metrics, one interrupted with a torn metrics.jsonl."""
    def make_run(name, status, modes, hq, lr="0.001", seed=0, wall=10.0):
        folder = tmp_path / "runs" / name
        (folder / ".hydra").mkdir(parents=True)
        summary = {"status": status, "metrics": {"modes": modes, "hq": hq, "w1": 0.5},
                   "model": "gan", "dataset": "ring8", "seed": seed, "wall_seconds": wall}
        (folder / "summary.json").write_text(json.dumps(summary))
        (folder / ".hydra" / "overrides.yaml").write_text(  # print_every: no group of its own
            f"- model.lr={lr}\n- seed={seed}\n- train.print_every={seed + 1}\n")
        (folder / ".hydra" / "config.yaml").write_text(
            f"model:\n  name: gan\n  lr: {lr}\ndataset:\n  name: ring8\n  radius: 2.0\n"
            f"  std: 0.02\nseed: {seed}\n")
        return folder

    for seed, (modes, hq, wall) in enumerate([(7, 0.4, 10.0), (8, 0.5, 30.0), (6, 0.6, 20.0)]):
        make_run(f"{seed}_a", "completed", modes, hq, seed=seed, wall=wall)
    make_run("3_b", "completed", 2, 0.25, lr="0.01")
    killed = make_run("4_b", "interrupted", 0, 0.0, lr="0.01", seed=1)
    # a job killed while writing its metrics leaves a torn last line
    (killed / "metrics.jsonl").write_text('{"step": 100, "w1": 0.7}\n{"step": 200, "w1')
    (tmp_path / "runs" / "0_a" / "metrics.jsonl").write_text('{"step": 5, "w1": 0.5}\n{"st')

    assert report_command([str(tmp_path / "runs"), "figure=false"]) == 0
    out = capsys.readouterr().out
    header, rows = table_rows(out)
    assert header == ["model.lr", "modes", "hq", "w1", "runs", "wall s"]
    # modes 7, 8, 6: mean 7 of ring8's 8, sample std 1; hq 0.4, 0.5, 0.6: 0.5 ± 0.1
    assert rows["0.001"] == {"model.lr": "0.001", "modes": "7/8 ± 1 (6–8)", "hq": "0.5 ± 0.1",
                             "w1": "0.5 ± 0", "runs": "3/3", "wall s": "20"}
    assert rows["0.01"]["modes"] == "2/8" and rows["0.01"]["hq"] == "0.25"  # n = 1: no ±
    assert rows["0.01"]["runs"] == "1/2 (1 interrupted)"
    assert "interrupted; last evaluation at step 100" in out


def test_bad_paths_and_options_are_one_line_errors(runs, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    result = run_igm(["report", "no_such_folder"], tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "igm: error: report path 'no_such_folder' does not exist; give run or sweep folders"]
    result = run_igm(["report", str(empty)], tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip() == (f"igm: error: no runs found under '{empty}' "
                                     "(a run folder holds summary.json)")
    sweep = str(runs / "sweep")
    bad = {("by=nokey",): "by key 'nokey' is in no run's config; choose from: model, ",
           ("metrics=w1,fid",): "unknown metric 'fid' in metrics=; choose from: modes, hq, "
                                "kl_modes, mmd, w1",
           ("figure=maybe",): "figure must be true or false, got 'maybe'",
           ("colour=red",): "igm report: unknown argument 'colour=red'"}
    for extra, message in bad.items():
        with pytest.raises(IgmError) as error:
            report_command([sweep, *extra, f"out={tmp_path / 'out'}"])
        assert str(error.value).startswith(message), str(error.value)
        assert "\n" not in str(error.value)
    assert not (tmp_path / "out").exists()  # nothing written
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty"]


def test_a_copied_sweep_reports_from_its_new_place(runs, tmp_path, capsys):
    """Run folders are read where they are found, not where summary.json says they were."""
    copy = tmp_path / "copy"
    shutil.copytree(runs / "sweep", copy)
    for file in copy.glob("report.*"):
        file.unlink()
    for file in copy.glob("*/summary.json"):  # as if the original folders were gone
        summary = json.loads(file.read_text())
        file.write_text(json.dumps({**summary, "run_dir": str(tmp_path / "gone")}))
    assert report_command([str(copy), "metrics=w1"]) == 0
    assert (copy / "report.png").exists() and (copy / "report.csv").exists()
    assert "cannot sample" not in capsys.readouterr().err
