"""`igm estimate`: a distance between two known distributions from samples alone, beside its
exact value.

- f-divergences, ``method=variational``: a critic v maximises the f-GAN bound (Nowozin et al.
  2016, eq. 6, parametrisation I; methods.md §2)
      D_f(P||Q) >= E_p[T(x)] - E_q[f*(T(x))],   T = g_f(v(x)),   tight at T* = f'(p/q);
  the bound on a large fresh sample after training is the estimate.
- f-divergences, ``method=ratio``: the critic fits r ≈ p/q by least squares, ½ E_q[r²] - E_p[r]
  (uLSIF, Kanamori et al. 2009; lecture "Ratio matching"), and the estimate is the plug-in
  E_q[f(r(x))] on fresh samples of Q.
- ``divergence=wasserstein``: a critic f maximises E_p[f] - E_q[f] under WGAN-GP's penalty
  λ E(||∇f(x̂)|| - 1)² (Kantorovich-Rubinstein duality); the estimate is E_p f - E_q f.
- ``divergence=mmd``: no training, the witness is known in closed form; the estimate is the
  unbiased MMD² (U-statistic) under a sum of RBF kernels.
Exact values come from exact.py (closed forms, quadrature, optimal transport, Monte Carlo).
"""

from __future__ import annotations

import math
import time
from abc import ABC, abstractmethod
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
    Gaussian,
    GaussianMixture,
    ParallelLines,
    exact_value,
    mmd2_rbf,
    wasserstein1,
)
from igm_cli.metrics.distances import mmd
from igm_cli.objectives.base import gradient_norms
from igm_cli.objectives.ipm import interpolate
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
    build_arch(cfg.arch)
    resolve_device(cfg.device)
    build_pair(cfg)


def check_number(value, key: str, minimum: float, strict: bool = False) -> None:
    """A finite number >= minimum (> minimum when strict), else a one-line IgmError."""
    ok = (not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value)
          and (value > minimum if strict else value >= minimum))
    if not ok:
        bound = f"> {minimum:g}" if strict else f">= {minimum:g}"
        raise IgmError(f"{key} must be a finite number {bound}, got {value!r}")


def exact_for(name: str, p, q, bandwidths=None) -> tuple[float, str]:
    """(exact value, method). W1 from exact.wasserstein1, MMD² (RBF ``bandwidths``) from
    exact.mmd2_rbf; D_f(P||Q) from exact.exact_value, or with parallel lines: f(1) on one
    line, else f(0) + f'(∞)."""
    if name == "wasserstein":
        return wasserstein1(p, q)
    if name == "mmd":
        return mmd2_rbf(p, q, list(bandwidths))
    if not (isinstance(p, ParallelLines) or isinstance(q, ParallelLines)):
        return exact_value(name, p, q, n_samples=EXACT_MC_SAMPLES)
    if singular(p, q):
        return singular_value(name), "closed_form"
    return float(get_divergence(name).f(torch.tensor(1.0, dtype=torch.float64))), "closed_form"


def singular(p, q) -> bool:
    """Whether P and Q are mutually singular (a line against a density, or two distinct lines)."""
    lines = isinstance(p, ParallelLines), isinstance(q, ParallelLines)
    return any(lines) and not (all(lines) and p.theta == q.theta)


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
        both = isinstance(p, ParallelLines) and isinstance(q, ParallelLines)
        where = "the supports do not overlap" if both else "a line has no density in the plane"
        return f"P and Q are mutually singular ({where})"
    return {"pearson": "p/q is not square-integrable under Q",
            "neyman": "q/p is not square-integrable under P"}.get(name, "E_q[f(p/q)] diverges")


def estimate(cfg: DictConfig, run_dir: Path) -> dict:
    """Fit the estimator, evaluate it on fresh samples, write summary.json; returns it."""
    started = time.time()
    name = cfg.divergence.name
    p, q = build_pair(cfg)
    device = setup_device(cfg.device, cfg.train.threads)
    exact, exact_method = exact_for(name, p, q, cfg.divergence.get("bandwidths"))
    finite = math.isfinite(exact)
    print(f"estimating {name}(P, Q), P = {cfg.p.name}, Q = {cfg.q.name}, dimension {p.dim}: "
          f"exact {exact:.6g} ({exact_method})", flush=True)

    rng = torch.Generator().manual_seed(cfg.seed)  # every sample of P and Q
    writer = None
    if is_main_process():
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(str(run_dir))
    if name == "mmd":  # the witness is known in closed form: nothing to train
        n = cfg.divergence.n_samples
        value = float(mmd(p.sample(n, rng), q.sample(n, rng), list(cfg.divergence.bandwidths)))
        step, status, critic_error, note = 0, "completed", None, "no critic: U-statistic"
    else:
        fit = make_fit(cfg, p, q)
        critic = make_critic(cfg, p, q, rng, device)
        step, status = train_critic(critic, fit, p, q, cfg.train, rng, writer,
                                    exact if finite else None)
        value, critic_error, note = fit.evaluate(critic, p, q, cfg.eval.n_samples, rng)
    ok = status == "completed" and math.isfinite(value)
    summary = {
        "status": status,
        "divergence": name,
        "method": cfg.method,
        "p": OmegaConf.to_container(cfg.p, resolve=True),
        "q": OmegaConf.to_container(cfg.q, resolve=True),
        "estimate": value if ok else None,
        "exact": exact if finite else "inf",  # JSON has no infinity
        "exact_method": exact_method,
        "abs_error": abs(value - exact) if finite and ok else None,
        "critic_error": critic_error,
        "steps": step,
        "wall_seconds": round(time.time() - started, 3),
    }
    if note:
        summary["critic_error_note"] = note
    messages = [] if finite else [f"{name}(P||Q) is infinite: {infinite_reason(name, p, q)}"
                                  f"; the {'bound' if cfg.method == 'variational' else 'estimate'}"
                                  " grows without limit"]
    if status == "diverged":
        messages.append(f"training diverged: the estimate became non-finite at step {step}")
    if messages:
        summary["message"] = "; ".join(messages)
    if writer is not None:
        writer.add_scalar("estimate/final", value, step)
        writer.close()
        write_json_atomic(summary, run_dir / "summary.json")
    error = f"  |error| {summary['abs_error']:.4f}" if summary["abs_error"] is not None else ""
    print(f"{name}: estimate {value:.4f}  exact {exact:.4f} ({exact_method}){error}")
    for message in messages:
        print(f"igm: {message}")
    return summary


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


def make_critic(cfg: DictConfig, p, q, rng: torch.Generator, device: torch.device) -> Critic:
    """A fresh critic for P and Q, standardised by the mean and sd of 4096 samples of each."""
    torch.manual_seed(cfg.seed)  # network initialisation
    net = build_arch(cfg.arch).build("critic", (p.dim,))
    pooled = torch.cat([p.sample(4096, rng), q.sample(4096, rng)])
    return Critic(net, pooled.mean(0), pooled.std(0).clamp(min=1e-3)).to(device)


# ----------------------------------------------------------------------------
# What the critic is trained on, and how the trained critic becomes an estimate.

class Fit(ABC):
    """One estimator: ``train_step`` gives (loss to minimise, value to log) on a batch of P and
    one of Q; ``evaluate`` gives (estimate, critic_error, note) on n fresh samples of each."""

    tag = "estimate/bound"  # the TensorBoard tag of the logged training value

    @abstractmethod
    def train_step(self, critic, x_p, x_q) -> tuple[torch.Tensor, torch.Tensor]:
        """(loss, logged value) on one batch of P and one of Q."""

    @abstractmethod
    def evaluate(self, critic, p, q, n: int, rng: torch.Generator
                 ) -> tuple[float, float | None, str]:
        """(estimate, critic_error or None, note) on n fresh samples of P and of Q."""

    @staticmethod
    @torch.no_grad()
    def outputs(critic, dist, n: int, rng: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """(x, v(x)) for n fresh samples x of ``dist``, v in float64 on the CPU."""
        x = dist.sample(n, rng)
        return x, torch.cat([critic(chunk).double().cpu() for chunk in x.split(EVAL_CHUNK)])


class VariationalBound(Fit):
    """The f-GAN bound E_p[g_f(v)] - E_q[f*(g_f(v))], maximised."""

    def __init__(self, div: Divergence):
        self.div = div

    def train_step(self, critic, x_p, x_q):
        bound = (self.div.activation(critic(x_p)).mean()
                 - self.div.f_star_of_activation(critic(x_q)).mean())
        return -bound, bound

    def evaluate(self, critic, p, q, n, rng):
        """critic_error is E_q[(T - T*)²], or None with a note where T* or T is not finite."""
        (_, v_p), (x_q, v_q) = self.outputs(critic, p, n, rng), self.outputs(critic, q, n, rng)
        div = self.div
        bound = float(div.activation(v_p).mean() - div.f_star_of_activation(v_q).mean())
        t, t_star = div.activation(v_q), optimal_critic(div, p, q, x_q)
        if not torch.isfinite(t_star).all():
            zero = " (p/q = 0 there: P and Q are mutually singular)" if singular(p, q) else ""
            return bound, None, f"T* = f'(p/q) is infinite on samples of Q{zero}"
        if not torch.isfinite(t).all():
            return bound, None, "the learned T is not finite on some samples of Q"
        return bound, float(((t - t_star) ** 2).mean()), ""


class RatioFit(Fit):
    """r = softplus(v) >= 0 fitted by least squares ½ E_q[r²] - E_p[r] (minimiser r = p/q);
    the estimate is the plug-in E_q[f(r)], logged on each batch as estimate/plugin."""

    tag = "estimate/plugin"

    def __init__(self, div: Divergence):
        self.div = div

    @staticmethod
    def ratio(v: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.softplus(v)

    def train_step(self, critic, x_p, x_q):
        r_p, r_q = self.ratio(critic(x_p)), self.ratio(critic(x_q))
        loss = 0.5 * r_q.pow(2).mean() - r_p.mean()  # ½ E_q[r²] - E_p[r]
        return loss, self.div.f(r_q.detach().double()).mean()

    def evaluate(self, critic, p, q, n, rng):
        """critic_error is E_q[(r - p/q)²] (0 for parallel lines on one line, p/q = 0 apart)."""
        x_q, v_q = self.outputs(critic, q, n, rng)
        r = self.ratio(v_q)
        value = float(self.div.f(r).mean())
        return value, float(((r - density_ratio(p, q, x_q)) ** 2).mean()), ""


class WassersteinDual(Fit):
    """max_f E_p[f] - E_q[f] - λ E(||∇f(x̂)||₂ - 1)² on interpolates x̂ (Gulrajani et al. 2017)."""

    def __init__(self, gp_lambda: float):
        self.gp_lambda = gp_lambda

    def train_step(self, critic, x_p, x_q):
        gap = critic(x_p).mean() - critic(x_q).mean()
        x_hat = interpolate(x_p, x_q).requires_grad_(True)
        penalty = self.gp_lambda * (gradient_norms(critic(x_hat), x_hat) - 1).pow(2).mean()
        return penalty - gap, gap

    def evaluate(self, critic, p, q, n, rng):
        (_, f_p), (_, f_q) = self.outputs(critic, p, n, rng), self.outputs(critic, q, n, rng)
        return float(f_p.mean() - f_q.mean()), None, "no closed-form optimal critic"


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
