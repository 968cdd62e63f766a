"""`igm estimate`: a distance between two known distributions from samples alone, beside its
exact value.

- f-divergences, ``method=variational``: a critic v maximises the f-GAN bound (Nowozin et al.
  2016, eq. 6, parametrisation I; methods.md §2)
      D_f(P||Q) >= E_p[T(x)] - E_q[f*(T(x))],   T = g_f(v(x)),   tight at T* = f'(p/q);
  the bound on a large fresh sample after training is the estimate.
- f-divergences, ``method=ratio``: the critic fits r ≈ p/q by least squares, ½ E_q[r²] - E_p[r]
  (uLSIF, Kanamori et al. 2009; lecture "Ratio matching"), and the estimate is the plug-in
  E_q[f(r(x))] on fresh samples of Q.
  Refused where P and Q are mutually singular: E_q[f(r)] sees only Q's support and misses the
  f'(∞) P(q = 0) part of D_f (lines: TV about 0.47 for the exact 1).
- ``divergence=wasserstein``: a critic f maximises E_p[f] - E_q[f] - λ E max(0, ||∇f(x̂)|| - 1)²
  (Kantorovich-Rubinstein duality asks only ||∇f|| <= 1: the one-sided penalty of Petzka et al.
  2018, not WGAN-GP's two-sided one, which traps a critic that starts with the wrong sign);
  f starts at 0 (last layer zeroed), and the estimate is E_p f - E_q f.
- ``divergence=mmd``: no training, the witness is known in closed form; the estimate is the
  unbiased MMD² (U-statistic) under a sum of RBF kernels.
Every estimate comes with its standard error over the evaluation sample (``std_error``). Exact
values come from exact.py (closed forms, quadrature, optimal transport, Monte Carlo with its
standard error; a Monte Carlo mean of infinite variance is reported as a ``reference``, not as
``exact``).
"""

from __future__ import annotations

import math
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from igm_cli.build import (
    build_arch,
    check_lr_decay,
    check_positive_ints,
    lr_factor,
    resolve_device,
    setup_device,
)
from igm_cli.divergences import LOG2, Divergence, get_divergence
from igm_cli.errors import IgmError
from igm_cli.exact import (
    ExactValue,
    Gaussian,
    GaussianMixture,
    ParallelLines,
    exact_value,
    mmd2_rbf,
    mmd2_u_statistic,
    wasserstein1,
)
from igm_cli.objectives.fgan import FGAN, fenchel_bound
from igm_cli.objectives.ipm import gradient_penalty, wasserstein_gap
from igm_cli.objectives.ratio import least_squares_ratio_loss, ratio_from_output
from igm_cli.registry import DIVERGENCES
from igm_cli.runlog import is_main_process, write_json_atomic

METHODS = ("variational", "ratio")
IPMS = ("wasserstein", "mmd")  # integral probability metrics, beside the f-divergences
EXACT_MC_SAMPLES = 1_000_000  # Monte Carlo exact values (nD, no closed form): error ~1e-3
EVAL_CHUNK = 65536


DISTRIBUTIONS = {"gaussian": Gaussian, "gaussian_mixture": GaussianMixture,
                 "lines": ParallelLines}

# (f(0), f'(∞)) = (lim_{u->0} f(u), lim_{u->∞} f(u)/u) for each generator f of divergences.py.
F_LIMITS = {
    "kl": (0.0, math.inf),  # u log u -> 0;  log u -> ∞
    "reverse_kl": (math.inf, 0.0),  # -log u -> ∞;  -log(u)/u -> 0
    "pearson": (1.0, math.inf),  # (0 - 1)² = 1;  (u - 1)²/u -> ∞
    "neyman": (math.inf, 1.0),  # (1 - u)²/u -> ∞;  (1 - u)²/u² -> 1
    "squared_hellinger": (1.0, 1.0),  # (√u - 1)² -> 1;  (1 - 1/√u)² -> 1
    "jeffrey": (math.inf, math.inf),  # (u - 1) log u -> ∞;  (1 - 1/u) log u -> ∞
    "jensen_shannon": (LOG2, LOG2),  # -log(1/2);  log u - (1 + 1/u) log((1 + u)/2) -> log 2
    "gan": (0.0, 0.0),  # -log 1 = 0;  log(u/(u + 1)) - log(u + 1)/u -> 0
    "total_variation": (0.5, 0.5),  # |0 - 1|/2;  |u - 1|/(2u) -> 1/2
}


def singular_value(name: str) -> float:
    """D_f(P||Q) for mutually singular P and Q: f(0) Q(p = 0) + f'(∞) P(q = 0) with both masses 1,
    from the general definition (Liese & Vajda 2006, "On divergences and informations in
    statistics and information theory")."""
    f0, f_inf = F_LIMITS[name]
    return f0 + f_inf


def build_distribution(node: DictConfig, which: str):
    """P or Q from its config group (`which` is "p" or "q", for messages)."""
    params = OmegaConf.to_container(node, resolve=True)
    name = params.pop("name")
    if name not in DISTRIBUTIONS:
        raise IgmError(f"unknown {which} '{name}'; choose from: {', '.join(DISTRIBUTIONS)}")
    try:
        return DISTRIBUTIONS[name](**params)
    except (TypeError, IgmError) as exc:
        raise IgmError(f"{which}={name}: {exc}") from None


def build_pair(cfg: DictConfig) -> tuple:
    """(P, Q) from `cfg.p` and `cfg.q`, of the same dimension."""
    p, q = build_distribution(cfg.p, "p"), build_distribution(cfg.q, "q")
    if p.dim != q.dim:
        raise IgmError(f"p has dimension {p.dim} but q has dimension {q.dim} "
                       f"(p={cfg.p.name}, q={cfg.q.name})")
    return p, q


def check_estimate_config(cfg: DictConfig) -> None:
    """Every check that needs no training; each failure is a one-line IgmError."""
    name = cfg.divergence.name
    if cfg.method not in METHODS:
        raise IgmError(f"unknown method '{cfg.method}'; choose from: {', '.join(METHODS)}")
    if name == "wasserstein":
        check_number(cfg.divergence.gp_lambda, "divergence.gp_lambda", minimum=0.0)
    elif name == "mmd":
        check_positive_ints(cfg, ("divergence.n_samples",))
        if cfg.divergence.n_samples < 3:  # the U-statistic's variance needs n >= 3
            raise IgmError(f"divergence.n_samples must be an integer >= 3, "
                           f"got {cfg.divergence.n_samples}")
        bandwidths = cfg.divergence.bandwidths
        if not bandwidths or isinstance(bandwidths, (str, int, float)):
            raise IgmError(f"divergence.bandwidths must be a list of positive numbers, "
                           f"got {bandwidths!r}")
        for h in bandwidths:
            check_number(h, "divergence.bandwidths entry", minimum=0.0, strict=True)
    elif name not in DIVERGENCES:
        raise IgmError(f"unknown divergence '{name}'; choose from: "
                       f"{', '.join(sorted([*DIVERGENCES.names(), *IPMS]))}")
    if name in IPMS and cfg.method != "variational":
        raise IgmError(f"method={cfg.method} fits a density ratio for an f-divergence; "
                       f"{name} takes method=variational")
    check_positive_ints(cfg, ("train.steps", "train.batch_size", "train.log_every",
                              "train.threads", "eval.n_samples"))
    check_number(cfg.train.lr, "train.lr", minimum=0.0, strict=True)
    check_lr_decay(cfg.train.lr_decay)
    resolve_device(cfg.device)
    p, q = build_pair(cfg)
    build_arch(cfg.arch, (p.dim,))
    if cfg.method == "ratio" and singular(p, q):
        raise IgmError(f"method=ratio cannot estimate {name} here: {singular_reason(p, q)}, and "
                       f"the plug-in E_q[f(r)] sees only Q's support, so it misses the "
                       f"f'(∞)·P(q = 0) part of D_f; use method=variational")


def check_number(value, key: str, minimum: float, strict: bool = False) -> None:
    """A finite number >= minimum (> minimum when strict), else a one-line IgmError."""
    ok = (not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value)
          and (value > minimum if strict else value >= minimum))
    if not ok:
        bound = f"> {minimum:g}" if strict else f">= {minimum:g}"
        raise IgmError(f"{key} must be a finite number {bound}, got {value!r}")


def exact_for(name: str, p, q, bandwidths=None) -> ExactValue:
    """The exact value and its route. W1 from exact.wasserstein1, MMD² (RBF ``bandwidths``)
    from exact.mmd2_rbf; D_f(P||Q) from exact.exact_value, or with parallel lines: f(1) on
    one line, else f(0) + f'(∞)."""
    if name == "wasserstein":
        return wasserstein1(p, q)
    if name == "mmd":
        return mmd2_rbf(p, q, list(bandwidths))
    if not (isinstance(p, ParallelLines) or isinstance(q, ParallelLines)):
        return exact_value(name, p, q, n_samples=EXACT_MC_SAMPLES)
    if singular(p, q):
        return ExactValue(singular_value(name), "closed_form")
    one = get_divergence(name).f(torch.tensor(1.0, dtype=torch.float64))
    return ExactValue(float(one), "closed_form")


def singular(p, q) -> bool:
    """Whether P and Q are mutually singular (a line against a density, or two distinct lines)."""
    lines = isinstance(p, ParallelLines), isinstance(q, ParallelLines)
    return any(lines) and not (all(lines) and p.theta == q.theta)


def singular_reason(p, q) -> str:
    """Why P and Q are mutually singular, in a few words."""
    both = isinstance(p, ParallelLines) and isinstance(q, ParallelLines)
    where = "the supports do not overlap" if both else "a line has no density in the plane"
    return f"P and Q are mutually singular ({where})"


def density_ratio(p, q, x: torch.Tensor) -> torch.Tensor:
    """p(x)/q(x) at samples x of Q (float64): 0 there when P and Q are mutually singular, 1 for
    the same line twice."""
    if isinstance(p, ParallelLines) or isinstance(q, ParallelLines):
        return torch.full(x.shape[:1], 0.0 if singular(p, q) else 1.0, dtype=torch.float64)
    return torch.exp(p.log_prob(x) - q.log_prob(x))


def optimal_critic(div: Divergence, p, q, x: torch.Tensor) -> torch.Tensor:
    """T*(x) = f'(p(x)/q(x)) at samples x of Q (float64)."""
    return div.f_prime(density_ratio(p, q, x))


def infinite_reason(name: str, p, q) -> str:
    """Why D_f(P||Q) is infinite, in a few words."""
    if singular(p, q):
        return singular_reason(p, q)
    return {"pearson": "p/q is not square-integrable under Q",
            "neyman": "q/p is not square-integrable under P"}.get(name, "E_q[f(p/q)] diverges")


def estimate(cfg: DictConfig, run_dir: Path) -> dict:
    """Fit the estimator, evaluate it on fresh samples, write summary.json; returns it."""
    started = time.time()
    name = cfg.divergence.name
    p, q = build_pair(cfg)
    device = setup_device(cfg.device, cfg.train.threads)
    exact = exact_for(name, p, q, cfg.divergence.get("bandwidths"))
    comparable = exact.is_exact and math.isfinite(exact.value)  # a number to hold estimates to
    print(f"estimating {name}(P, Q), P = {cfg.p.name}, Q = {cfg.q.name}, dimension {p.dim}: "
          f"{describe_exact(exact)}", flush=True)

    rng = torch.Generator().manual_seed(cfg.seed)  # every sample of P and Q
    writer = None
    if is_main_process():
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(str(run_dir))
    if name == "mmd":  # the witness is known in closed form: nothing to train
        n = cfg.divergence.n_samples
        value, std_error = mmd2_u_statistic(p.sample(n, rng), q.sample(n, rng),
                                            list(cfg.divergence.bandwidths))
        result = Evaluation(value, std_error, None, "no critic: U-statistic")
        step, status = 0, "completed"
    else:
        fit = make_fit(cfg, p, q)
        critic = make_critic(cfg, p, q, rng, device, zero_output=fit.zero_start)
        step, status = train_critic(critic, fit, p, q, cfg.train, rng, writer,
                                    exact.value if comparable else None)
        result = fit.evaluate(critic, p, q, cfg.eval.n_samples, rng)
    ok = status == "completed" and math.isfinite(result.value)
    summary = {
        "status": status,
        "divergence": name,
        "method": cfg.method,
        "p": OmegaConf.to_container(cfg.p, resolve=True),
        "q": OmegaConf.to_container(cfg.q, resolve=True),
        "estimate": result.value if ok else None,
        "std_error": finite_or_none(result.std_error) if ok else None,
        # JSON has no infinity: "inf"; null where only a Monte Carlo reference exists
        "exact": (None if not exact.is_exact else exact.value if math.isfinite(exact.value)
                  else "inf"),
        "exact_method": exact.method,
        "exact_std_error": finite_or_none(exact.std_error),
        "abs_error": abs(result.value - exact.value) if comparable and ok else None,
        "critic_error": result.critic_error,
        "steps": step,
        "wall_seconds": round(time.time() - started, 3),
    }
    if not exact.is_exact:
        summary["reference"] = exact.value
    if result.note:
        summary["critic_error_note"] = result.note
    messages = []
    if exact.is_exact and not math.isfinite(exact.value):
        messages.append(f"{name}(P||Q) is infinite: {infinite_reason(name, p, q)}; the "
                        f"{'bound' if cfg.method == 'variational' else 'estimate'} grows without "
                        "limit")
    if not exact.is_exact:
        one_each = all(sum(w > 0 for w in d._params()[0]) == 1 for d in (p, q))  # exact test
        shown = "is infinite" if one_each else "is not shown finite (mixtures)"
        messages.append(f"no exact value: the Monte Carlo reference {exact.value:.6g} has "
                        f"infinite variance (E_q[f(p/q)²] {shown}), so its error is unknown")
    if status == "diverged":
        messages.append(f"training diverged: the estimate became non-finite at step {step}")
    if messages:
        summary["message"] = "; ".join(messages)
    if writer is not None:
        writer.add_scalar("estimate/final", result.value, step)
        writer.close()
        write_json_atomic(summary, run_dir / "summary.json")
    error = f"  |error| {summary['abs_error']:.4f}" if summary["abs_error"] is not None else ""
    print(f"{name}: estimate {result.value:.4f} ± {result.std_error:.4f}  "
          f"{describe_exact(exact, '.4f')}{error}")
    for message in messages:
        print(f"igm: {message}")
    return summary


def describe_exact(exact: ExactValue, fmt: str = ".6g") -> str:
    """'exact 0.443147 (closed_form)', 'exact 0.255107 ± 0.00031 (monte_carlo)', or for a Monte
    Carlo mean of infinite variance 'reference 47.7 (monte_carlo, infinite variance: ...)'."""
    value = format(exact.value, fmt)
    if not exact.is_exact:
        return f"reference {value} ({exact.method}, infinite variance: not exact)"
    error = f" ± {exact.std_error:.2g}" if exact.std_error is not None else ""
    return f"exact {value}{error} ({exact.method})"


def finite_or_none(x: float | None) -> float | None:
    """x for JSON, None where it is missing or not finite."""
    return x if x is not None and math.isfinite(x) else None


class Critic(torch.nn.Module):
    """v(x) = net((x - center) / spread): the arch's critic on standardised inputs, so that the
    default net fits any location and scale."""

    def __init__(self, net: torch.nn.Module, center: torch.Tensor, spread: torch.Tensor):
        super().__init__()
        self.net = net
        self.register_buffer("center", center.float())
        self.register_buffer("spread", spread.float())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net((x.to(self.center) - self.center) / self.spread)


def make_critic(cfg: DictConfig, p, q, rng: torch.Generator, device: torch.device,
                zero_output: bool = False) -> Critic:
    """A fresh critic for P and Q, standardised by the mean and sd of 4096 samples of each;
    ``zero_output`` zeroes its last linear layer, so that it starts as the function 0."""
    torch.manual_seed(cfg.seed)  # network initialisation
    net = build_arch(cfg.arch, (p.dim,)).build("critic", (p.dim,))
    if zero_output:
        linear = [m for m in net.modules() if isinstance(m, torch.nn.Linear)
                  and not torch.nn.utils.parametrize.is_parametrized(m)]  # spectral norm: skip
        if linear:
            torch.nn.init.zeros_(linear[-1].weight)
            torch.nn.init.zeros_(linear[-1].bias)
    pooled = torch.cat([p.sample(4096, rng), q.sample(4096, rng)])
    return Critic(net, pooled.mean(0), pooled.std(0).clamp(min=1e-3)).to(device)


# ----------------------------------------------------------------------------
# What the critic is trained on, and how the trained critic becomes an estimate. The losses are
# the objectives' own (objectives/fgan.py, ratio.py, ipm.py).

@dataclass
class Evaluation:
    """An estimate on fresh samples, its standard error over those samples, and how far the
    critic is from the optimal one (None, with a note, where that is not known)."""

    value: float
    std_error: float
    critic_error: float | None = None
    note: str = ""


def std_error(*samples: torch.Tensor) -> float:
    """Standard error of a sum or difference of the means of independent samples,
    √(Σ_k var(s_k) / n_k)."""
    return math.sqrt(sum(float(s.var()) / len(s) for s in samples))


class Fit(ABC):
    """One estimator: ``train_step`` gives (loss to minimise, value to log) on a batch of P and
    one of Q; ``evaluate`` gives an Evaluation on n fresh samples of each."""

    tag = "estimate/bound"  # the TensorBoard tag of the logged training value
    zero_start = False  # start the critic at the function 0 (``make_critic``)

    @abstractmethod
    def train_step(self, critic, x_p, x_q) -> tuple[torch.Tensor, torch.Tensor]:
        """(loss, logged value) on one batch of P and one of Q."""

    @abstractmethod
    def evaluate(self, critic, p, q, n: int, rng: torch.Generator) -> Evaluation:
        """The estimate on n fresh samples of P and of Q."""

    @staticmethod
    @torch.no_grad()
    def outputs(critic, dist, n: int, rng: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """(x, v(x)) for n fresh samples x of ``dist``, v in float64 on the CPU."""
        x = dist.sample(n, rng)
        return x, torch.cat([critic(chunk).double().cpu() for chunk in x.split(EVAL_CHUNK)])


class VariationalBound(Fit):
    """The f-GAN bound E_p[T] - E_q[f*(T)], T = g_f(v) (objectives.fgan.FGAN), maximised."""

    def __init__(self, div: Divergence):
        self.div = div
        self.fgan = FGAN(div)  # its terms(v) = (T, f*(T))

    def train_step(self, critic, x_p, x_q):
        t_p, _ = self.fgan.terms(critic(x_p))
        _, f_star_q = self.fgan.terms(critic(x_q))
        bound = fenchel_bound(t_p, f_star_q)
        return -bound, bound

    def evaluate(self, critic, p, q, n, rng):
        """critic_error is E_q[(T - T*)²], or None with a note where T* or T is not finite."""
        (_, v_p), (x_q, v_q) = self.outputs(critic, p, n, rng), self.outputs(critic, q, n, rng)
        t_p, _ = self.fgan.terms(v_p)
        t_q, f_star_q = self.fgan.terms(v_q)
        bound, error = float(fenchel_bound(t_p, f_star_q)), std_error(t_p, f_star_q)
        t_star = optimal_critic(self.div, p, q, x_q)
        if not torch.isfinite(t_star).all():
            zero = " (p/q = 0 there: P and Q are mutually singular)" if singular(p, q) else ""
            note = f"T* = f'(p/q) is infinite on samples of Q{zero}"
            return Evaluation(bound, error, None, note)
        if not torch.isfinite(t_q).all():
            note = "the learned T is not finite on some samples of Q"
            return Evaluation(bound, error, None, note)
        return Evaluation(bound, error, float(((t_q - t_star) ** 2).mean()))


class RatioFit(Fit):
    """r = softplus(v), floored (objectives.ratio.ratio_from_output), fitted by least squares
    ½ E_q[r²] - E_p[r] (minimiser r = p/q); the estimate is the plug-in E_q[f(r)], logged on
    each batch as estimate/plugin."""

    tag = "estimate/plugin"

    def __init__(self, div: Divergence):
        self.div = div

    def train_step(self, critic, x_p, x_q):
        r_p, r_q = ratio_from_output(critic(x_p)), ratio_from_output(critic(x_q))
        return least_squares_ratio_loss(r_p, r_q), self.div.f(r_q.detach().double()).mean()

    def evaluate(self, critic, p, q, n, rng):
        """critic_error is E_q[(r - p/q)²] (0 for parallel lines on one line)."""
        x_q, v_q = self.outputs(critic, q, n, rng)
        r = ratio_from_output(v_q)
        plugin = self.div.f(r)  # [n]
        return Evaluation(float(plugin.mean()), std_error(plugin),
                          float(((r - density_ratio(p, q, x_q)) ** 2).mean()))


class WassersteinDual(Fit):
    """max_f E_p[f] - E_q[f] - λ E max(0, ||∇f(x̂)||₂ - 1)² on interpolates x̂: the one-sided
    penalty (objectives.ipm.gradient_penalty), starting from f = 0."""

    zero_start = True

    def __init__(self, gp_lambda: float):
        self.gp_lambda = gp_lambda

    def train_step(self, critic, x_p, x_q):
        gap = wasserstein_gap(critic, x_p, x_q)  # E_p f - E_q f
        # λ E max(0, ||∇f(x̂)|| - 1)²: only slopes above 1 cost anything
        penalty = self.gp_lambda * gradient_penalty(critic, x_p, x_q, one_sided=True)
        return penalty - gap, gap

    def evaluate(self, critic, p, q, n, rng):
        (_, f_p), (_, f_q) = self.outputs(critic, p, n, rng), self.outputs(critic, q, n, rng)
        return Evaluation(float(f_p.mean() - f_q.mean()), std_error(f_p, f_q), None,
                          "no closed-form optimal critic")


def make_fit(cfg: DictConfig, p, q) -> Fit:
    if cfg.divergence.name == "wasserstein":
        return WassersteinDual(cfg.divergence.gp_lambda)
    div = get_divergence(cfg.divergence.name)
    return RatioFit(div) if cfg.method == "ratio" else VariationalBound(div)


def train_critic(critic, fit: Fit, p, q, train: DictConfig, rng: torch.Generator,
                 writer, exact: float | None) -> tuple[int, str]:
    """Adam on the fit's loss over fresh batches; returns (last step, "completed" | "diverged")."""
    steps = train.steps
    optimizer = torch.optim.Adam(critic.parameters(), lr=train.lr)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_factor(train.lr_decay, s, steps))
    for step in range(1, steps + 1):
        loss, value = fit.train_step(critic, p.sample(train.batch_size, rng),
                                     q.sample(train.batch_size, rng))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        if step % train.log_every == 0 or step == steps:
            logged = value.item()
            if not (math.isfinite(logged) and math.isfinite(loss.item())):
                return step, "diverged"
            if writer is not None:
                writer.add_scalar(fit.tag, logged, step)
                if exact is not None:
                    writer.add_scalar("estimate/exact", exact, step)
        if step % max(steps // 10, 1) == 0:
            print(f"step {step}/{steps}  {fit.tag.split('/')[1]} {value.item():.4f}", flush=True)
    return steps, "completed"
