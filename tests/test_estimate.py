"""`igm estimate` (igm_cli/estimate.py): the trained bound against exact values, the parallel
lines and their limits f(0) + f'(∞), the summary and TensorBoard files, and bad input."""

import json
import math

import pytest
import torch
from conftest import run_igm
from hydra import compose, initialize_config_dir
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from igm_cli.cli import config_dir, main
from igm_cli.divergences import get_divergence
from igm_cli.estimate import F_LIMITS, ParallelLines, estimate, exact_for, singular_value
from igm_cli.registry import DIVERGENCES

LOG2 = math.log(2)


@pytest.fixture(autouse=True)
def keep_threads():
    """estimate() runs single-threaded on the CPU; give the other tests their threads back."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def run_estimate(tmp_path, *overrides):
    """estimate() in this process on the composed config; returns its summary."""
    with initialize_config_dir(str(config_dir()), version_base="1.3"):
        cfg = compose("estimate", overrides=list(overrides))
    return estimate(cfg, tmp_path)


def test_cli_kl_1d_defaults(tmp_path):
    """The whole command with the default training settings: summary, bound, TensorBoard."""
    result = run_igm(["estimate", "q.scale=[1.5]", "hydra.run.dir=run"], tmp_path, check=True)
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    exact = math.log(1.5) + 2 / (2 * 1.5**2) - 0.5  # methods.md §2, N(0, 1) against N(1, 1.5²)
    assert summary["status"] == "completed" and summary["divergence"] == "kl"
    assert summary["exact_method"] == "closed_form"
    assert summary["exact"] == pytest.approx(exact, rel=1e-12)
    assert abs(summary["estimate"] - exact) < 0.05
    assert summary["abs_error"] == pytest.approx(abs(summary["estimate"] - exact))
    assert 0 <= summary["critic_error"] < 0.2
    assert summary["p"] == {"name": "gaussian", "loc": [0.0], "scale": [1.0]}
    assert summary["steps"] == 2000 and summary["wall_seconds"] > 0
    assert result.stdout.strip().splitlines()[-1].startswith("kl: estimate 0.3")

    events = EventAccumulator(str(tmp_path / "run"), size_guidance={"scalars": 0})
    events.Reload()
    bound = [e.value for e in events.Scalars("estimate/bound")]
    assert len(bound) == 100  # every train.log_every = 20 steps
    late = sum(bound[-25:]) / 25
    assert bound[0] < late and abs(late - exact) < 0.05  # the bound climbs to the exact value
    assert [e.value for e in events.Scalars("estimate/exact")] == [pytest.approx(exact)] * 100
    assert events.Scalars("estimate/final")[0].value == pytest.approx(summary["estimate"])


@pytest.mark.parametrize("overrides", [
    ["divergence=squared_hellinger", "q.scale=[1.5]"],
    ["divergence=pearson", "q.scale=[1.5]"],
    ["p.loc=[0,0]", "p.scale=[1,1]", "q.loc=[1,0]", "q.scale=[2,1]"],  # the 2D KL pair
])
def test_gaussian_pairs_meet_the_target(tmp_path, overrides):
    summary = run_estimate(tmp_path, *overrides)
    assert summary["exact_method"] == "closed_form"
    assert summary["abs_error"] <= max(0.05, 0.05 * summary["exact"]), summary


def test_mixture_against_quadrature(tmp_path):
    summary = run_estimate(tmp_path, "divergence=jensen_shannon", "p=gaussian_mixture",
                           "train.steps=500", "eval.n_samples=20000")
    assert summary["exact_method"] == "quadrature"
    assert summary["abs_error"] < 0.05, summary


def test_lines_kl_is_infinite(tmp_path, capsys):
    summary = run_estimate(tmp_path, "p=lines", "q=lines", "train.steps=100",
                           "eval.n_samples=1000")
    assert summary["exact"] == "inf" and summary["abs_error"] is None
    assert summary["critic_error"] is None and "singular" in summary["critic_error_note"]
    assert json.loads((tmp_path / "summary.json").read_text())["exact"] == "inf"
    lines = [line for line in capsys.readouterr().out.splitlines() if "infinite" in line]
    assert lines == ["igm: kl(P||Q) is infinite: P and Q are mutually singular "
                     "(the supports do not overlap); the bound grows without limit"]


def test_lines_js_is_2_log_2(tmp_path):
    summary = run_estimate(tmp_path, "divergence=jensen_shannon", "p=lines", "q=lines",
                           "q.theta=0.5", "train.steps=300", "eval.n_samples=2000")
    assert summary["exact"] == pytest.approx(2 * LOG2)  # methods.md §4: JSD = log 2, D_f = 2 JSD
    assert summary["abs_error"] < 0.02


@pytest.mark.parametrize("name", DIVERGENCES.names())
def test_f_limits(name):
    """F_LIMITS against f near 0 and f(u)/u at large u; an infinite limit must keep growing."""
    div = get_divergence(name)
    f0, f_inf = F_LIMITS[name]
    small = div.f(torch.tensor([1e-6, 1e-12], dtype=torch.float64)).tolist()
    u = torch.tensor([1e6, 1e12], dtype=torch.float64)
    slope = (div.f(u) / u).tolist()
    for limit, (near, nearer) in ((f0, small), (f_inf, slope)):
        if math.isinf(limit):
            assert 10 < near < nearer
        else:
            assert nearer == pytest.approx(limit, abs=1e-5)


def test_singular_values():
    """Parallel lines, θ ≠ 0 (methods.md §4: KL = ∞, JSD = log 2, TV = 1), and θ = 0: f(1)."""
    expected = {"kl": math.inf, "reverse_kl": math.inf, "pearson": math.inf, "neyman": math.inf,
                "jeffrey": math.inf, "squared_hellinger": 2.0, "jensen_shannon": 2 * LOG2,
                "gan": 0.0, "total_variation": 1.0}  # gan: 2 JSD - log 4
    assert {name: singular_value(name) for name in DIVERGENCES.names()} == pytest.approx(expected)
    same = ParallelLines(0.3), ParallelLines(0.3)
    assert exact_for("kl", *same) == (0.0, "closed_form")
    assert exact_for("gan", *same)[0] == pytest.approx(-math.log(4))
    x = ParallelLines(2.0).sample(100, torch.Generator().manual_seed(0))
    assert x.shape == (100, 2) and (x[:, 0] == 2).all() and ((0 <= x) & (x <= 2)).all()


@pytest.mark.parametrize("args, needle", [
    (["p.scale=[-1]"], "-1.0"),
    (["p.loc=[0,0]", "p.scale=[1,1]"], "dimension 2"),
    (["p=gaussian_mixture", "p.weights=[0.5,0.6]"], "sum to 1.1"),
    (["divergence.name=kll"], "'kll'"),
    (["p=lines", "p.theta=nan"], "theta"),
    (["p=lines"], "dimension 2"),
    (["method=mc"], "'mc'"),
    (["train.steps=0"], "train.steps"),
    (["train.lr=-1"], "train.lr"),
    (["train.threads=0"], "train.threads"),
])
def test_bad_input(tmp_path, monkeypatch, capsys, args, needle):
    monkeypatch.chdir(tmp_path)
    assert main(["estimate", *args]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("igm: error: ") and needle in lines[0], lines
    assert not (tmp_path / "outputs").exists()


def test_unknown_divergence_cli(tmp_path):
    result = run_igm(["estimate", "divergence=kll"], tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "igm: error: unknown divergence 'kll'; choose from: "
        + ", ".join(sorted([*DIVERGENCES.names(), "mmd", "wasserstein"]))]
    assert not (tmp_path / "outputs").exists()


# ----------------------------------------------------------------------------
# Integral probability metrics and the ratio method (issue 4).

def test_w1_exact_values():
    """1D quadrature of |F_P - F_Q| against the sorted-sample matching on 400k points; two
    lines |θ_P - θ_Q|; a shift between equal shapes moves every point by the shift."""
    from igm_cli.exact import Gaussian, GaussianMixture, wasserstein1
    from igm_cli.metrics.distances import w1

    p, q = Gaussian([0.0], [1.0]), Gaussian([1.0], [2.0])
    exact, method = wasserstein1(p, q)
    rng = torch.Generator().manual_seed(0)
    assert method == "quadrature"
    assert exact == pytest.approx(w1(p.sample(400_000, rng), q.sample(400_000, rng)), abs=0.01)
    shifted = GaussianMixture([0.3, 0.7], [[-1.0], [2.0]], [[0.5], [0.8]])
    moved = GaussianMixture([0.3, 0.7], [[-0.25], [2.75]], [[0.5], [0.8]])
    assert wasserstein1(shifted, moved)[0] == pytest.approx(0.75, abs=1e-6)
    assert wasserstein1(ParallelLines(-0.3), ParallelLines(0.5)) == (pytest.approx(0.8),
                                                                     "closed_form")


def test_mmd_exact_values():
    """Closed forms against a large U-statistic: a mixture against a Gaussian in 2D, two lines."""
    from igm_cli.exact import Gaussian, GaussianMixture, mmd2_rbf
    from igm_cli.metrics.distances import mmd

    rng = torch.Generator().manual_seed(0)
    pairs = [(GaussianMixture([0.3, 0.7], [[-1.0, 0.0], [1.0, 1.0]], [[0.5, 1.0], [0.8, 0.3]]),
              Gaussian([0.0, 0.0], [1.0, 1.0]), [0.5, 2.0]),
             (ParallelLines(0.0), ParallelLines(0.5), [0.3, 1.0])]
    for p, q, bandwidths in pairs:
        exact, method = mmd2_rbf(p, q, bandwidths)
        sampled = mmd(p.sample(8000, rng), q.sample(8000, rng), bandwidths)
        assert method == "closed_form" and exact > 0.05
        assert sampled == pytest.approx(exact, abs=0.01)
    assert mmd2_rbf(ParallelLines(0.2), ParallelLines(0.2), [1.0])[0] == 0


@pytest.mark.parametrize("overrides, tolerance", [
    (["q.loc=[1]", "q.scale=[2]"], 0.1),  # 1D: exact from the CDFs
    (["p=lines", "q=lines", "q.theta=0.5"], 0.05),  # |θ|
])
def test_wasserstein_critic(tmp_path, overrides, tolerance):
    summary = run_estimate(tmp_path, "divergence=wasserstein", *overrides)
    assert summary["status"] == "completed" and summary["divergence"] == "wasserstein"
    assert summary["abs_error"] <= tolerance * summary["exact"], summary
    events = EventAccumulator(str(tmp_path), size_guidance={"scalars": 0})
    events.Reload()
    assert events.Scalars("estimate/bound")[-1].value > 0.5 * summary["exact"]


def test_mmd_estimate(tmp_path):
    summary = run_estimate(tmp_path, "divergence=mmd", "q.loc=[1]", "q.scale=[2]",
                           "divergence.bandwidths=[0.5,2]", "divergence.n_samples=4000")
    assert summary["exact_method"] == "closed_form" and summary["steps"] == 0
    assert summary["abs_error"] < 0.01 and summary["exact"] > 0.2


@pytest.mark.parametrize("divergence", ["kl", "pearson"])
def test_ratio_method(tmp_path, divergence):
    """Least-squares ratio fit, plug-in E_q[f(r)]: within 5% of the closed form, and the fitted
    ratio close to p/q on samples of Q."""
    summary = run_estimate(tmp_path, "method=ratio", f"divergence={divergence}", "q.scale=[1.5]")
    assert summary["method"] == "ratio" and summary["exact_method"] == "closed_form"
    assert summary["abs_error"] <= 0.05 * summary["exact"], summary
    assert summary["critic_error"] < 0.05


@pytest.mark.parametrize("overrides, needle", [
    (["divergence=wasserstein", "method=ratio"], "wasserstein takes method=variational"),
    (["divergence=mmd", "divergence.bandwidths=[1,-2]"], "divergence.bandwidths entry"),
    (["divergence=mmd", "divergence.n_samples=0"], "divergence.n_samples"),
    (["divergence=wasserstein", "divergence.gp_lambda=-1"], "divergence.gp_lambda"),
    (["method=ratios"], "unknown method 'ratios'; choose from: variational, ratio"),
])
def test_ipm_bad_input(tmp_path, overrides, needle):
    result = run_igm(["estimate", *overrides], tmp_path)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1 and needle in lines[0], lines
    assert not (tmp_path / "outputs").exists()


def test_fgan_refuses_an_ipm(tmp_path):
    result = run_igm(["train", "model=fgan", "divergence=wasserstein"], tmp_path)
    assert result.returncode == 2
    assert "model fgan takes an f-divergence, got divergence=wasserstein" in result.stderr
