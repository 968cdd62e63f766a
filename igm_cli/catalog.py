"""The names igm offers, one line each, readable without importing torch.

`igm list`, `igm VERB --help` and shell completion need the registered models, data sets, archs
and divergences with their descriptions, but the registries fill up only when the modules that
register into them are imported, and those import torch (1-2 s). So the registries stay the one
source of truth and this module copies them into catalog.json:

    python -m igm_cli.catalog --write    # after adding or renaming a registered builder
    python -m igm_cli.catalog --check    # exit 1 when catalog.json differs from the registries

tests/test_cli_help.py runs the check, so a stale catalog fails the tests.
"""

from __future__ import annotations

import json
import sys
from functools import lru_cache
from pathlib import Path

CATALOG_FILE = Path(__file__).with_name("catalog.json")
REGENERATE = "python -m igm_cli.catalog --write"

# Kinds beyond the config-group registries: estimate's extra divergences ("ipm"), its p/q
# distributions, its methods, and the image-evaluation names.
# A verb's group takes its choices from the kind of the same name unless named here.
GROUP_KINDS = {
    ("estimate", "divergence"): ("divergence", "ipm"),  # f-divergences, then W1 and MMD
    ("estimate", "p"): ("distribution",),
    ("estimate", "q"): ("distribution",),
}
# Keys whose values are the names of a kind (help lists them, completion offers them).
KEY_KINDS = {"method": "method", "eval.features": "feature", "features": "feature"}
# `igm list KIND`: the kinds it shows (plural or singular on the command line).
LIST_KINDS = {"model": ("model",), "dataset": ("dataset",), "arch": ("arch",),
              "divergence": ("divergence", "ipm"), "metric": ("metric",)}


def build() -> dict[str, dict[str, str]]:
    """The catalog from the live registries and tables (imports torch)."""
    from igm_cli.build import registries
    from igm_cli.cli import config_dir
    from igm_cli.estimate import DISTRIBUTIONS, IPMS, METHODS
    from igm_cli.helptext import read_config, summary
    from igm_cli.metrics import METRICS, families
    from igm_cli.metrics.images import FEATURES

    kinds = {kind: dict(registry.describe()) for kind, registry in registries().items()}
    # W1 and MMD have no builder in a registry: their config files describe them.
    ipm_file = config_dir() / "divergence"
    kinds["ipm"] = {name: summary(read_config(ipm_file / f"{name}.yaml").header) for name in IPMS}
    kinds["distribution"] = {name: first_line(cls.__doc__) for name, cls in DISTRIBUTIONS.items()}
    kinds["method"] = {name: "" for name in METHODS}
    kinds["feature"] = dict(FEATURES.describe())
    descriptions = dict(METRICS.describe())
    kinds["metric"] = {name: f"[{', '.join(METRICS.info(name)['kind'])}] {descriptions[name]}"
                       for name in METRICS.in_order()}
    kinds["image_metric"] = {name: descriptions[name] for name in families("images")}
    return kinds


def first_line(doc: str | None) -> str:
    lines = (doc or "").strip().splitlines()
    return lines[0].strip() if lines else ""


def render(catalog: dict) -> str:
    note = {"_generated_by": f"{REGENERATE} (from the registries; do not edit)"}
    return json.dumps({**note, **catalog}, indent=1, ensure_ascii=False) + "\n"


def read_file() -> dict[str, dict[str, str]] | None:
    try:
        text = CATALOG_FILE.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    return {kind: names for kind, names in json.loads(text).items() if not kind.startswith("_")}


@lru_cache(maxsize=1)
def load() -> dict[str, dict[str, str]]:
    """The shipped catalog; built from the registries (slow) only if the file is missing."""
    shipped = read_file()
    return build() if shipped is None else shipped


def entries(*kinds: str) -> list[tuple[str, str]]:
    """(name, description) of every name of the given kinds, in catalog order."""
    catalog = load()
    return [item for kind in kinds for item in catalog.get(kind, {}).items()]


def group_kinds(verb: str, group: str) -> tuple[str, ...]:
    """The catalog kinds that list a verb's config group; () when the catalog has none (then
    the group's config files are its choices, e.g. recipe)."""
    if (verb, group) in GROUP_KINDS:
        return GROUP_KINDS[verb, group]
    return (group,) if group in load() else ()


def check() -> str | None:
    """None when catalog.json equals the live registries, else what differs and the fix."""
    live, shipped = build(), read_file()
    if shipped is None:
        return f"{CATALOG_FILE} is missing; run `{REGENERATE}`"
    if live == shipped:
        return None
    differences = []
    for kind in sorted(set(live) | set(shipped)):
        a, b = live.get(kind, {}), shipped.get(kind, {})
        for name in sorted(set(a) | set(b)):
            if a.get(name) != b.get(name):
                differences.append(f"{kind} {name}: registry {a.get(name)!r}, "
                                   f"catalog.json {b.get(name)!r}")
    return (f"{CATALOG_FILE} differs from the registries; run `{REGENERATE}`:\n  "
            + "\n  ".join(differences))


def main(argv: list[str]) -> int:
    if argv == ["--write"]:
        CATALOG_FILE.write_text(render(build()), encoding="utf-8")
        print(f"wrote {CATALOG_FILE}")
        return 0
    if argv == ["--check"]:
        problem = check()
        print(problem or f"{CATALOG_FILE} matches the registries", file=sys.stderr)
        return 1 if problem else 0
    print("usage: python -m igm_cli.catalog --write | --check", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
