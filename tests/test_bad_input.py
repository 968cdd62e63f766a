"""Bad input: one line naming the bad value, a non-zero exit, no file touched."""

import hashlib

import numpy as np
import pytest
from conftest import FAST


def assert_one_line_error(result, *needles):
    assert result.returncode == 2, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("igm: error: ") and "Traceback" not in result.stderr
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])


@pytest.mark.parametrize("args, needles", [
    (["bogus"], ["'bogus'", "train, estimate, sample, eval, reconstruct, list"]),
    (["train", "model=wgann"], ["model 'wgann'", "gan, gan_minimax"]),
    (["train", "dataset=ring9"], ["dataset 'ring9'", "grid25", "ring8"]),
    (["train", "arch=transformer"], ["arch 'transformer'", "mlp"]),
    (["train", "-m", "model=gan,nope"], ["model 'nope'"]),
    (["train", "train.steps=0"], ["train.steps", "0"]),
    (["train", "train.batch_size=-4"], ["train.batch_size", "-4"]),
    (["train", "device=tpu"], ["'tpu'", "auto, cpu, cuda"]),
    (["train", "eval.background=sometimes"],
     ["eval.background", "'sometimes'", "auto, true, false"]),
    (["train", "dataset=npy"], ["dataset.path"]),
    (["train", "dataset=npy", "dataset.path=missing.npy"], ["missing.npy", "does not exist"]),
    (["train", "resume=nowhere"], ["/nowhere'", "does not exist"]),
    (["sample", "run=.", "n=5", "out=x.npy"], ["no checkpoint"]),
    (["sample", "run=.", "n=zero", "out=x.npy"], ["'zero'"]),
])
def test_bad_input_is_one_line(igm, tmp_path, args, needles):
    result = igm(*args)
    assert_one_line_error(result, *needles)
    assert not (tmp_path / "outputs").exists()  # nothing written for a refused command


def test_malformed_npy(igm, tmp_path):
    np.save(tmp_path / "flat.npy", np.zeros(10))
    assert_one_line_error(igm("train", "dataset=npy", "dataset.path=flat.npy"), "flat.npy",
                          "N x D")


def snapshot(folder):
    return {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.rglob("*") if p.is_file()}


@pytest.fixture
def finished_run(igm, tmp_path):
    igm("train", "train.steps=10", "eval.every=10", "eval.plot=false", *FAST,
        "hydra.run.dir=run", check=True)
    return tmp_path / "run"


def test_bad_resume_targets_touch_nothing(igm, tmp_path, finished_run):
    before = snapshot(tmp_path)
    (tmp_path / "notackpt.pt").write_text("hello")
    before = snapshot(tmp_path)
    assert_one_line_error(igm("train", "resume=notackpt.pt"), "notackpt.pt", "not a readable")
    assert_one_line_error(igm("train", "resume=run", "model=gan_minimax", "train.steps=20"),
                          "'gan'", "'gan_minimax'")
    assert_one_line_error(igm("train", "resume=run"), "already at step 10")
    assert_one_line_error(igm("train", "resume=run", "train.steps=0"), "train.steps")
    assert snapshot(tmp_path) == before
