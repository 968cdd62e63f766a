"""Sweeps: the sweep report and exit code (igm_cli/sweep.py), the presets in configs/debug,
experiment, hparams_search and hydra/launcher, and real sweeps through the CLI with the basic,
joblib, submitit and Optuna plugins (debug=fast: 20 steps per job)."""

import json
from pathlib import Path

import pytest
import yaml
from conftest import compose_train
from hydra.core.utils import JobReturn, JobStatus
from hydra.types import RunMode
from omegaconf import OmegaConf, open_dict

from igm_cli.cli import config_dir
from igm_cli.sweep import (
    NO_SUMMARY,
    SweepSummary,
    exit_code,
    job_dirname,
    report,
)


def read_sweep(sweep_dir: Path) -> dict:
    """{job folder name: job record} from the sweep's sweep_summary.json."""
    return {job["dir"]: job for job in json.loads((sweep_dir / "sweep_summary.json")
                                                 .read_text())["jobs"]}


# ---------------------------------------------------------------------------- units

def test_job_folder_names_carry_the_overrides_and_the_seed():
    assert job_dirname(3, 0, "model.lr=0.005537190123123") == "3_model.lr=0.005537,seed=0"
    assert job_dirname(0, 2, "") == "0_seed=2"  # the seed also when nothing else is given
    assert job_dirname(1, 0, "model=gan,train.steps=20") == "1_model=gan,train.steps=20,seed=0"
    assert job_dirname(4, 0, "model.lr=1e-05") == "4_model.lr=1e-05,seed=0"  # short: kept
    unsafe = job_dirname(5, 1, "dataset.name=a b/c*d")
    assert unsafe == "5_dataset.name=a_b_c_d,seed=1" and "/" not in unsafe
    assert len(job_dirname(6, 0, "x" * 400)) < 200


def test_exit_code_failed_wins_over_diverged_and_interrupted():
    assert exit_code(["completed", "completed"]) == 0
    assert exit_code(["completed", "interrupted"]) == 130
    assert exit_code(["interrupted"], hydra_code=143) == 143  # SIGTERM keeps its code
    assert exit_code(["interrupted", "diverged"]) == 3
    assert exit_code(["diverged", "failed", "interrupted"]) == 2
    assert exit_code(["completed"], hydra_code=1) == 2  # Hydra stopped the sweep: failed
    assert exit_code([]) == 0


def make_job(sweep_dir: Path, num: int, overrides: list[str], summary: dict | None) -> Path:
    job = sweep_dir / f"{num}_job"
    (job / ".hydra").mkdir(parents=True)
    (job / ".hydra" / "hydra.yaml").write_text(yaml.safe_dump(
        {"hydra": {"job": {"num": num}, "overrides": {"task": overrides}}}))
    if summary is not None:
        (job / "summary.json").write_text(json.dumps(summary))
    return job


def test_report_reads_every_job_folder(tmp_path, capsys):
    sweep = tmp_path / "sweep"
    make_job(sweep, 0, ["debug=fast", "model.lr=0.001"],
             {"status": "completed", "metrics": {"modes": 8, "w1": 0.13912}})
    make_job(sweep, 1, ["debug=fast", "model.lr=0.1"],
             {"status": "diverged", "metrics": {}, "message": "diverged at step 7 (nan)"})
    make_job(sweep, 2, ["debug=fast", "model.lr=-1"], None)  # crashed before any summary
    assert report(sweep) == 2
    out, err = capsys.readouterr()
    assert f"sweep: {sweep}/  1 completed, 1 diverged, 1 failed" in out
    assert "every job: debug=fast" in out
    rows = [line for line in out.splitlines() if line.startswith("| ")]
    assert rows[0].split("|")[1:-1] == [" job ", " overrides      ", " status    ",
                                        " modes ", " w1     "]
    assert [r.split("|")[1:4] for r in rows[1:]] == [
        [" 0   ", " model.lr=0.001 ", " completed "],
        [" 1   ", " model.lr=0.1   ", " diverged  "],
        [" 2   ", " model.lr=-1    ", " failed    "]]
    assert rows[1].split("|")[4:6] == [" 8     ", " 0.1391 "]
    assert err.splitlines() == [
        "igm: job 1 (model.lr=0.1) diverged: diverged at step 7 (nan)",
        f"igm: job 2 (model.lr=-1) failed: {NO_SUMMARY}"]
    jobs = read_sweep(sweep)
    assert jobs["2_job"] == {"num": 2, "dir": "2_job", "overrides": ["debug=fast", "model.lr=-1"],
                             "status": "failed", "metrics": {}, "message": NO_SUMMARY}
    assert jobs["0_job"]["metrics"] == {"modes": 8, "w1": 0.13912}
    markdown = (sweep / "sweep_summary.md").read_text().splitlines()
    assert markdown[0] == f"Sweep {sweep}; every job: debug=fast"
    assert [line for line in markdown if line.startswith("| ")] == rows


def test_callback_clears_stale_summaries_and_records_errors(tmp_path):
    job = tmp_path / "0_job"
    job.mkdir()
    (job / "summary.json").write_text('{"status": "completed"}')  # an earlier attempt's
    config = OmegaConf.create({"hydra": {"mode": RunMode.MULTIRUN,
                                         "runtime": {"output_dir": str(job)}},
                               "model": {"name": "gan"}, "seed": 4})
    callback = SweepSummary()
    callback.on_job_start(config)
    assert not (job / "summary.json").exists()
    failed = JobReturn(status=JobStatus.FAILED, _return_value=RuntimeError("boom\nsecond line"))
    callback.on_job_end(config, failed)
    summary = json.loads((job / "summary.json").read_text())
    assert summary["status"] == "failed" and summary["message"] == "RuntimeError: boom"
    assert summary["model"] == "gan" and summary["seed"] == 4


# ---------------------------------------------------------------------------- presets

def test_debug_and_experiment_presets_and_command_line_wins():
    cfg = compose_train(["debug=fast"])
    assert (cfg.train.steps, cfg.eval.every, cfg.eval.plot) == (20, 20, False)
    cfg = compose_train(["experiment=grid25_wgan_gp", "model.lr=5e-4", "debug=fast"])
    assert (cfg.model.name, cfg.dataset.name, cfg.model.gp_lambda) == ("wgan_gp", "grid25", 1.0)
    assert cfg.model.lr == 5e-4 and cfg.train.steps == 20
    cfg = compose_train(["experiment=ring8_gan", "train.steps=7", "seed=3"])
    assert (cfg.model.name, cfg.train.steps, cfg.seed, cfg.model.r1_gamma) == ("gan", 7, 3, 1.0)


def test_grid25_wgan_gp_preset_is_the_grid25_recipe_written_out():
    """The preset pins every setting of `model=wgan_gp dataset=grid25` (README, "grid25"), so it
    neither mixes an old recipe with the new one nor moves when the recipe does."""
    preset = compose_train(["experiment=grid25_wgan_gp"])
    plain = compose_train(["model=wgan_gp", "dataset=grid25"])
    for key in ("model", "dataset", "train.steps", "train.batch_size", "train.recipe_steps",
                "train.lr_decay"):
        assert OmegaConf.select(preset, key) == OmegaConf.select(plain, key), key
    auto = {"z_dim": 2, "hidden": 128}  # what arch=mlp's auto sizes are for 2-D points
    assert {k: auto.get(k, v) if v == "auto" else v for k, v in plain.arch.items()} == preset.arch
    written = yaml.safe_load((config_dir() / "experiment" / "grid25_wgan_gp.yaml").read_text())
    assert written["arch"]["activation"] == "relu" and written["train"]["steps"] == 15000


def test_toy_benchmark_sweeps_every_registered_model():
    import igm_cli.objectives  # noqa: F401  (registers the models)
    from igm_cli.registry import MODELS

    params = compose_train(["experiment=toy_benchmark"], hydra_config=True).hydra.sweeper.params
    assert params.model.split(",") == sorted(MODELS.names())
    assert params.dataset == "ring8,grid25" and params.seed == "0,1,2"


def test_slurm_preset_has_what_sbatch_needs(monkeypatch):
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    import submitit
    from hydra.core.hydra_config import HydraConfig
    from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf

    cfg = compose_train(["hydra/launcher=slurm", "hydra.launcher.partition=gpu",
                         "hydra.launcher.mem_gb=32", "model.lr=0.002",
                         "hydra.sweep.dir=/scratch/sweep"], hydra_config=True)
    with open_dict(cfg):
        cfg.hydra.job.num = 4  # set by the launcher for each job
    HydraConfig.instance().set_config(cfg)
    launcher = OmegaConf.to_container(cfg.hydra.launcher, resolve=True)
    assert launcher["_target_"].endswith("submitit_launcher.SlurmLauncher")
    assert {k: launcher[k] for k in ("partition", "gpus_per_node", "tasks_per_node",
                                     "timeout_min", "mem_gb", "signal_delay_s",
                                     "max_num_timeout")} == {
        "partition": "gpu", "gpus_per_node": 1, "tasks_per_node": 1, "timeout_min": 240,
        "mem_gb": 32, "signal_delay_s": 120, "max_num_timeout": 3}
    assert launcher["submitit_folder"] == "/scratch/sweep/.submitit/%j"
    assert f"{cfg.hydra.sweep.dir}/{cfg.hydra.sweep.subdir}" == \
        "/scratch/sweep/4_model.lr=0.002,seed=0"

    # The sbatch file, built the way the launcher builds it (no SLURM here: pretend srun).
    monkeypatch.setattr(submitit.SlurmExecutor, "affinity", classmethod(lambda cls: 1))
    launcher.pop("_target_")
    executor = submitit.AutoExecutor(folder=launcher.pop("submitit_folder"), cluster="slurm",
                                     slurm_max_num_timeout=launcher.pop("max_num_timeout"))
    generic = set(OmegaConf.structured(BaseQueueConf).keys())
    executor.update_parameters(**{k if k in generic else f"slurm_{k}": v
                                  for k, v in launcher.items()})
    sbatch = executor._executor._make_submission_file_text("python -m job", "uid")
    for line in ("--partition=gpu", "--gpus-per-node=1", "--ntasks-per-node=1",
                 "--cpus-per-task=4", "--mem=32GB", "--time=240", "--signal=USR2@120",
                 "--output=/scratch/sweep/.submitit/%j/%j_0_log.out"):
        assert f"#SBATCH {line}\n" in sbatch, line


# ---------------------------------------------------------------------------- real sweeps

def test_optuna_search_of_four_trials(igm, tmp_path):
    pytest.importorskip("hydra_plugins.hydra_optuna_sweeper")
    result = igm("train", "-m", "hparams_search=gan_ring8_optuna", "debug=fast",
                 "hydra.sweeper.n_trials=4", "hydra.sweep.dir=sweep")
    assert result.returncode == 0, result.stderr
    sweep = tmp_path / "sweep"
    assert f"sweep: {tmp_path / 'sweep'}/  (4 jobs)" in result.stdout  # paths are absolute
    assert f"sweep: {tmp_path / 'sweep'}/  4 completed" in result.stdout
    jobs = read_sweep(sweep)
    assert sorted(job["num"] for job in jobs.values()) == [0, 1, 2, 3]
    for name, job in jobs.items():
        assert name.startswith(f"{job['num']}_model.ema=") and name.endswith(",seed=0")
        assert (sweep / name / "summary.json").is_file()
    table = [line for line in result.stdout.splitlines() if line.startswith("| ")]
    assert len(table) == 5 and "w1" in table[0]
    best = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    best_job = min(jobs.values(), key=lambda job: job["metrics"]["w1"])
    assert best["best_value"] == best_job["metrics"]["w1"]
    assert {f"{k}={v}" for k, v in best["best_params"].items()} <= set(best_job["overrides"])


def test_joblib_sweep_exits_non_zero_and_names_the_failed_jobs(igm, tmp_path):
    """Jobs run in joblib's worker processes: one raises at build time (lr -1: torch's
    ValueError, or igm's own check), one stops with an igm error (unknown lr decay), one
    completes. Before sweep.py the second kind left no trace and the sweep exited 0."""
    pytest.importorskip("hydra_plugins.hydra_joblib_launcher")
    result = igm("train", "-m", "debug=fast", "model.lr=-1,0.001", "train.lr_decay=linear,bogus",
                 "hydra/launcher=parallel", "hydra.launcher.n_jobs=2", "hydra.sweep.dir=sweep")
    assert result.returncode == 2, result.stdout + result.stderr
    jobs = read_sweep(tmp_path / "sweep")
    assert set(jobs) == {"0_model.lr=-1,train.lr_decay=linear,seed=0",
                         "1_model.lr=-1,train.lr_decay=bogus,seed=0",
                         "2_model.lr=0.001,train.lr_decay=linear,seed=0",
                         "3_model.lr=0.001,train.lr_decay=bogus,seed=0"}
    completed = jobs.pop("2_model.lr=0.001,train.lr_decay=linear,seed=0")
    assert completed["status"] == "completed" and completed["metrics"]["w1"] > 0
    for name, job in jobs.items():
        assert job["status"] == "failed", name
        bad = "bogus" if "bogus" in name else "-1"
        assert bad in job["message"], job
        assert f"igm: job {job['num']} (" in result.stderr
        assert f") failed: {job['message']}\n" in result.stderr


def test_submitit_local_sweep_of_two_jobs(igm, tmp_path):
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    result = igm("train", "-m", "debug=fast", "seed=0,1", "hydra/launcher=submitit",
                 "hydra.sweep.dir=sweep")
    assert result.returncode == 0, result.stdout + result.stderr
    sweep = tmp_path / "sweep"
    jobs = read_sweep(sweep)
    assert set(jobs) == {"0_seed=0", "1_seed=1"}
    assert all(job["status"] == "completed" for job in jobs.values())
    for name in jobs:  # each job ran in its own submitit process, logged under .submitit
        assert json.loads((sweep / name / "summary.json").read_text())["seed"] == int(name[-1])
    assert len(list((sweep / ".submitit").glob("*/*_log.out"))) == 2
    assert f"sweep: {tmp_path / 'sweep'}/  2 completed" in result.stdout
