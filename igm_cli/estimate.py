"""`igm estimate`: D_f(P||Q) between two known distributions from a trained critic alone.

The critic v: R^d -> R maximises the f-GAN variational bound (Nowozin et al. 2016, eq. 6 with
parametrisation I; methods.md §2)

    D_f(P||Q) >= E_p[T(x)] - E_q[f*(T(x))],   T = g_f(v(x)),   tight at T*(x) = f'(p(x)/q(x)),

on fresh samples of P and Q at every step. The bound on a large fresh sample after training is
the estimate, reported next to the exact value (exact.py; for the parallel lines, from the
limits of f below) and the critic's mean squared gap to T* on samples of Q.
"""

from __future__ import annotations

import math
import time
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
from igm_cli.exact import Gaussian, GaussianMixture, exact_value
from igm_cli.runlog import is_main_process, write_json_atomic

METHODS = ("variational",)
EXACT_MC_SAMPLES = 1_000_000  # Monte Carlo exact values (nD, no closed form): error ~1e-3
EVAL_CHUNK = 65536


@dataclass
class ParallelLines:
    """The lecture's parallel line: points (theta, u), u ~ U[0, 1] (Arjovsky et al. 2017, Ex. 1)."""

    theta: float
    dim = 2

    def __post_init__(self):
        try:
            theta = float(self.theta)
        except (TypeError, ValueError):
            theta = math.nan
        if not math.isfinite(theta):
            raise IgmError(f"lines theta must be a finite number, got {self.theta!r}")
        self.theta = theta

    def sample(self, n: int, generator: torch.Generator | None = None,
               dtype: torch.dtype = torch.float64) -> torch.Tensor:
        """n samples, shape (n, 2), on the CPU."""
        u = torch.rand(n, generator=generator, dtype=dtype)
        return torch.stack([torch.full_like(u, self.theta), u], dim=1)


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
    get_divergence(cfg.divergence.name)
    if cfg.method not in METHODS:
        raise IgmError(f"unknown method '{cfg.method}'; choose from: {', '.join(METHODS)}")
    check_positive_ints(cfg, ("train.steps", "train.batch_size", "train.log_every",
                              "train.threads", "eval.n_samples"))
    lr = cfg.train.lr
    if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not 0 < lr < math.inf:
        raise IgmError(f"train.lr must be a positive number, got {lr!r}")
    check_lr_decay(cfg.train.lr_decay)
    build_arch(cfg.arch)
    resolve_device(cfg.device)
    build_pair(cfg)


def exact_for(name: str, p, q) -> tuple[float, str]:
    """(D_f(P||Q), method); with parallel lines: f(1) on one line, else f(0) + f'(∞)."""
    if not (isinstance(p, ParallelLines) or isinstance(q, ParallelLines)):
        return exact_value(name, p, q, n_samples=EXACT_MC_SAMPLES)
    if singular(p, q):
        return singular_value(name), "closed_form"
    return float(get_divergence(name).f(torch.tensor(1.0, dtype=torch.float64))), "closed_form"


def singular(p, q) -> bool:
    """Whether P and Q are mutually singular (a line against a density, or two distinct lines)."""
    lines = isinstance(p, ParallelLines), isinstance(q, ParallelLines)
    return any(lines) and not (all(lines) and p.theta == q.theta)


def optimal_critic(div: Divergence, p, q, x: torch.Tensor) -> torch.Tensor:
    """T*(x) = f'(p(x)/q(x)) at samples x of Q (float64); p/q = 0 there when P, Q are singular."""
    if isinstance(p, ParallelLines) or isinstance(q, ParallelLines):
        ratio = torch.full(x.shape[:1], 0.0 if singular(p, q) else 1.0, dtype=torch.float64)
    else:
        ratio = torch.exp(p.log_prob(x) - q.log_prob(x))
    return div.f_prime(ratio)


def infinite_reason(name: str, p, q) -> str:
    """Why D_f(P||Q) is infinite, in a few words."""
    if singular(p, q):
        both = isinstance(p, ParallelLines) and isinstance(q, ParallelLines)
        where = "the supports do not overlap" if both else "a line has no density in the plane"
        return f"P and Q are mutually singular ({where})"
    return {"pearson": "p/q is not square-integrable under Q",
            "neyman": "q/p is not square-integrable under P"}.get(name, "E_q[f(p/q)] diverges")


def estimate(cfg: DictConfig, run_dir: Path) -> dict:
    """Train the critic, evaluate the bound on fresh samples, write summary.json; returns it."""
    started = time.time()
    div = get_divergence(cfg.divergence.name)
    p, q = build_pair(cfg)
    device = setup_device(cfg.device, cfg.train.threads)
    exact, exact_method = exact_for(div.name, p, q)
    finite = math.isfinite(exact)
    print(f"estimating {div.name}(P||Q), P = {cfg.p.name}, Q = {cfg.q.name}, dimension {p.dim}: "
          f"exact {exact:.6g} ({exact_method})", flush=True)

    rng = torch.Generator().manual_seed(cfg.seed)  # every sample of P and Q
    critic = make_critic(cfg, p, q, rng, device)
    writer = None
    if is_main_process():
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(str(run_dir))
    step, status = train_critic(critic, div, p, q, cfg.train, rng, writer,
                                exact if finite else None)
    value, critic_error, note = evaluate(critic, div, p, q, cfg.eval.n_samples, rng)
    ok = status == "completed" and math.isfinite(value)
    summary = {
        "status": status,
        "divergence": div.name,
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
    messages = [] if finite else [f"{div.name}(P||Q) is infinite: {infinite_reason(div.name, p, q)}"
                                  "; the bound grows without limit"]
    if status == "diverged":
        messages.append(f"training diverged: the bound became non-finite at step {step}")
    if messages:
        summary["message"] = "; ".join(messages)
    if writer is not None:
        writer.add_scalar("estimate/final", value, step)
        writer.close()
        write_json_atomic(summary, run_dir / "summary.json")
    error = f"  |error| {summary['abs_error']:.4f}" if summary["abs_error"] is not None else ""
    print(f"{div.name}: estimate {value:.4f}  exact {exact:.4f} ({exact_method}){error}")
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


def train_critic(critic, div: Divergence, p, q, train: DictConfig, rng: torch.Generator,
                 writer, exact: float | None) -> tuple[int, str]:
    """Adam on the bound over fresh batches; returns (last step, "completed" | "diverged")."""
    steps = train.steps
    optimizer = torch.optim.Adam(critic.parameters(), lr=train.lr)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_factor(train.lr_decay, s, steps))
    for step in range(1, steps + 1):
        # f-GAN bound (methods.md §2): E_p[g_f(v)] - E_q[f*(g_f(v))], maximised
        bound = (div.activation(critic(p.sample(train.batch_size, rng))).mean()
                 - div.f_star_of_activation(critic(q.sample(train.batch_size, rng))).mean())
        optimizer.zero_grad(set_to_none=True)
        (-bound).backward()
        optimizer.step()
        schedule.step()
        if step % train.log_every == 0 or step == steps:
            value = bound.item()
            if not math.isfinite(value):
                return step, "diverged"
            if writer is not None:
                writer.add_scalar("estimate/bound", value, step)
                if exact is not None:
                    writer.add_scalar("estimate/exact", exact, step)
        if step % max(steps // 10, 1) == 0:
            print(f"step {step}/{steps}  bound {bound.item():.4f}", flush=True)
    return steps, "completed"


@torch.no_grad()
def evaluate(critic, div: Divergence, p, q, n: int, rng: torch.Generator
             ) -> tuple[float, float | None, str]:
    """(bound, critic_error, note) on n fresh samples of P and of Q: critic_error is
    E_q[(T - T*)²], or None with a note saying why where T* or T is not finite."""
    def values(dist) -> tuple[torch.Tensor, torch.Tensor]:
        x = dist.sample(n, rng)
        return x, torch.cat([critic(chunk).double().cpu() for chunk in x.split(EVAL_CHUNK)])

    (_, v_p), (x_q, v_q) = values(p), values(q)
    bound = float(div.activation(v_p).mean() - div.f_star_of_activation(v_q).mean())
    t, t_star = div.activation(v_q), optimal_critic(div, p, q, x_q)
    if not torch.isfinite(t_star).all():
        zero = " (p/q = 0 there: P and Q are mutually singular)" if singular(p, q) else ""
        return bound, None, f"T* = f'(p/q) is infinite on samples of Q{zero}"
    if not torch.isfinite(t).all():
        return bound, None, "the learned T is not finite on some samples of Q"
    return bound, float(((t - t_star) ** 2).mean()), ""
