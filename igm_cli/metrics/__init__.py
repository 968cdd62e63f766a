"""Evaluation metrics: mode coverage on toy mixtures (toy), sample-set distances (distances),
image metrics (images).

``METRICS`` registers each metric family: a function from an evaluation's samples to
{name: value}, with the direction in which each of its values is better (``better``: name ->
"min" | "max" | None for companions such as a standard deviation) and the kind of data it applies
to. Help texts, `igm list metrics`, ``ckpt.keep_best``, ``eval.sweep_metric`` checks and the
end-of-run summary all read this one table.
"""

from __future__ import annotations

import math

from igm_cli.registry import Registry

METRICS = Registry("metric")


def better(name: str) -> str | None:
    """"min" or "max": which direction of metric ``name`` is better (None: no direction, or
    a metric no family registers, such as a model's own)."""
    for family in METRICS.names():
        outputs = METRICS.info(family)["better"]
        if name in outputs:
            return outputs[name]
    return None


def parse_keep_best(setting: str | None) -> tuple[str, str] | None:
    """``ckpt.keep_best``: METRIC (its registered direction) or max:METRIC / min:METRIC."""
    if not setting:
        return None
    direction, _, name = str(setting).rpartition(":")
    return name, direction or better(name)


def headline(metrics: dict[str, float], modes_total: int | None = None) -> str:
    """A short line of the main metrics, with the scale of mode counts: "modes 8/8, hq 0.83,
    w1 0.14"."""
    parts = []
    for name, value in metrics.items():
        if len(parts) == 3:
            break
        if name.endswith("_std") or not math.isfinite(value):
            continue
        if name == "modes" and modes_total:
            parts.append(f"modes {int(value)}/{modes_total}")
        elif name not in ("kl_modes", "mmd"):
            parts.append(f"{name} {value:.3g}")
    return ", ".join(parts)


def all_names() -> list[str]:
    return sorted({n for f in METRICS.names() for n in METRICS.info(f)["better"]})


def families(kind: str) -> list[str]:
    """The registered families for ``kind`` ("points" or "images"), in registration order."""
    return [f for f in METRICS.in_order() if kind in METRICS.info(f)["kind"]]


from igm_cli.metrics import digits, images, points  # noqa: E402,F401  (register the families)
