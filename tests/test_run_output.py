"""What a run tells its user (issue 12): the run folder at the start, a summary block at the end,
the same lines in train.log, no library chatter, a warning for runs shorter than their recipe,
TensorBoard's HPARAMS and TEXT, titled figures, and checkpoints/best.pt."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import FAST, run_igm
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator


@pytest.fixture(scope="module")
def best_run(tmp_path_factory):
    cwd = tmp_path_factory.mktemp("best")
    result = run_igm(["train", "train.steps=40", "eval.every=10", "ckpt.keep_best=w1",
                      "model.lr=5e-4", "train.recipe_steps=4000", *FAST, "hydra.run.dir=run"],
                     cwd, check=True, env_extra={"MPLCONFIGDIR": str(cwd / "mpl")})
    return cwd / "run", result


def test_start_and_end_of_a_run(best_run):
    run, result = best_run
    out = result.stdout
    assert out.splitlines()[0] == f"igm: run folder {run}"
    assert "igm: training gan on ring8, seed 0" in out
    assert "igm: warning: train.steps=40 is shorter than the 4000 steps" in out
    assert "igm: completed at step 40" in out
    assert "modes " in out and "/8 (higher is better)" in out and "w1 " in out
    assert "(lower is better)" in out
    assert f"tensorboard --logdir {run}" in out and f"igm sample run={run}" in out
    assert "fontManager" not in out + result.stderr  # no library INFO chatter
    assert result.stderr == ""


def test_log_file_holds_what_the_console_showed(best_run):
    run, result = best_run
    log = (run / "train.log").read_text().splitlines()
    assert log == result.stdout.splitlines()


def test_best_checkpoint_and_which(best_run, tmp_path):
    run, _ = best_run
    best = torch.load(run / "checkpoints/best.pt", weights_only=True)
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    w1s = {line["step"]: line["w1"] for line in lines}
    best_step = min(w1s, key=w1s.get)
    assert best["step"] == best_step and best["best"]["value"] == pytest.approx(w1s[best_step])
    summary = json.loads((run / "summary.json").read_text())
    assert summary["best"] == {"metric": "w1", "value": pytest.approx(w1s[best_step]),
                               "step": best_step}
    result = run_igm(["eval", f"run={run}", "which=best", "n=500", "metrics=[w1]"], tmp_path,
                     check=True)
    assert result.stdout.startswith("w1 ")
    record = json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])
    assert record["checkpoint"] == "best" and record["step"] == best_step
    run_igm(["sample", f"run={run}", "which=best", "n=7", "out=b.npy"], tmp_path, check=True)
    assert (tmp_path / "b.npy").exists()


def test_tensorboard_hparams_text_and_titles(best_run):
    from tensorboard.plugins.hparams import plugin_data_pb2

    run, _ = best_run
    events = EventAccumulator(str(run), size_guidance={"images": 0, "tensors": 0})
    events.Reload()
    contents = events.PluginTagToContent("hparams")
    assert contents, "no hparams data"
    infos = {}
    for content in contents.values():
        data = plugin_data_pb2.HParamsPluginData.FromString(content)
        if data.HasField("session_start_info"):
            infos = dict(data.session_start_info.hparams)
        if data.HasField("experiment"):
            metrics = [m.name.tag for m in data.experiment.metric_infos]
    assert infos["model"].string_value == "gan" and infos["seed"].number_value == 0
    assert infos["model.lr"].number_value == pytest.approx(5e-4)  # a key set on the command line
    assert "metrics/w1" in metrics and "metrics/modes" in metrics
    texts = events.PluginTagToContent("text")
    assert {"config/text_summary", "versions/text_summary"} <= set(texts)
    image = events.Images("samples")[-1]
    assert image.step == 40  # the figure has a title with step and metrics (drawn, not read)


def test_figure_titles_name_step_and_metrics():
    from igm_cli.metrics import headline

    assert headline({"modes": 8, "hq": 0.8312, "kl_modes": 0.001, "mmd": 0.0, "w1": 0.1391},
                    8) == "modes 8/8, hq 0.831, w1 0.139"


def test_background_evaluation_gives_the_same_numbers(tmp_path):
    """eval.background=true (metrics and pictures in a thread while training goes on) logs
    the same evaluations, at the same steps, as evaluating in the loop."""
    from hydra import compose, initialize_config_dir

    from igm_cli.cli import config_dir
    from igm_cli.trainer import train

    records = {}
    for background in ("true", "false"):
        with initialize_config_dir(str(config_dir()), version_base="1.3"):
            cfg = compose("train", overrides=[*FAST, "train.steps=60", "eval.every=20",
                                              "device=cpu", f"eval.background={background}"])
        assert train(cfg, tmp_path / background, [])["status"] == "completed"
        records[background] = (tmp_path / background / "metrics.jsonl").read_text()
        events = EventAccumulator(str(tmp_path / background), size_guidance={"images": 0})
        events.Reload()
        assert [e.step for e in events.Images("samples")] == [20, 40, 60]
    assert records["true"] == records["false"]
    assert [json.loads(line)["step"] for line in records["true"].splitlines()] == [20, 40, 60]


def test_auto_background_evaluation_leaves_the_cores_to_training(monkeypatch):
    """eval.background=auto evaluates in a thread only while the training loop's threads and
    the evaluation's (as many) fit the cores: two teams on 2 cores slowed Stacked Digits' loop
    to 55-85 steps/s for the rest of the run (85-175 in its own thread). On a GPU, and when
    set, as asked."""
    from igm_cli import evaluate

    monkeypatch.setattr(evaluate, "usable_cores", lambda: 2)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        assert not evaluate.in_background("auto", "cpu")
        assert evaluate.in_background("auto", torch.device("cuda", 0))
        assert evaluate.in_background(True, "cpu")
        torch.set_num_threads(1)
        assert evaluate.in_background("auto", "cpu")
        assert not evaluate.in_background(False, "cpu")
    finally:
        torch.set_num_threads(threads)


def test_auto_amp_takes_bf16_where_the_hardware_has_it(monkeypatch, tmp_path):
    """train.amp=auto: bf16 autocast on a CPU with AVX512-BF16 or AMX (Stacked Digits' MLP ran
    at ~70 steps/s on one core of this machine against ~40 in float32, with the same
    `confident` after 8000 steps), off on a CPU that would emulate it; set values as asked.
    The run says what auto chose."""
    from igm_cli import build

    cpu = torch.device("cpu")
    for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported"):
        monkeypatch.setattr(torch.cpu, name, lambda: False)
    assert build.resolve_amp("auto", cpu) == "off"
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: True)
    assert build.resolve_amp("auto", cpu) == "bf16"
    assert build.resolve_amp("off", cpu) == "off" and build.resolve_amp("bf16", cpu) == "bf16"
    monkeypatch.undo()

    result = run_igm(["train", "train.steps=20", "eval.every=20", "train.amp=auto", *FAST,
                      "hydra.run.dir=run"], tmp_path, check=True,
                     env_extra={"MPLCONFIGDIR": str(tmp_path / "mpl")})
    chosen = build.resolve_amp("auto", cpu)
    expected = ("bf16 autocast (native bfloat16 on cpu)" if chosen == "bf16"
                else "off (no native bfloat16 on cpu)")
    assert f"igm: train.amp=auto: {expected}" in result.stdout
    summary = json.loads((tmp_path / "run/summary.json").read_text())
    assert summary["status"] == "completed" and summary["steps"] == 20
