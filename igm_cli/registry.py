"""Name -> builder registries, so that ``model=wgan`` is one name away from its code."""

from __future__ import annotations

from typing import Callable, Iterator, TypeVar

from igm_cli.errors import IgmError

T = TypeVar("T")


class Registry:
    """A named table of builders (classes or functions), each with a one-line description.

    >>> MODELS = Registry("model")
    >>> @MODELS.register("gan", "non-saturating GAN")
    ... class NonSaturatingGAN: ...
    >>> MODELS.get("gan") is NonSaturatingGAN
    True
    """

    def __init__(self, kind: str):
        self.kind = kind
        self._builders: dict[str, Callable] = {}
        self._descriptions: dict[str, str] = {}
        self._info: dict[str, dict] = {}

    def register(self, name: str, description: str | None = None, **info) -> Callable[[T], T]:
        """Decorator adding ``builder`` as ``name``; ``info`` holds facts other code reads
        (e.g. a metric's ``better="min"``)."""
        def add(builder: T) -> T:
            if name in self._builders:
                raise ValueError(f"{self.kind} '{name}' is registered twice")
            self._builders[name] = builder
            doc = (builder.__doc__ or "").strip().splitlines()
            self._descriptions[name] = description or (doc[0] if doc else "")
            self._info[name] = info
            return builder

        return add

    def info(self, name: str) -> dict:
        self.get(name)  # unknown names fail with the choices
        return self._info[name]

    def get(self, name: str) -> Callable:
        if name not in self._builders:
            raise IgmError(f"unknown {self.kind} '{name}'; choose from: {', '.join(self.names())}")
        return self._builders[name]

    def names(self) -> list[str]:
        return sorted(self._builders)

    def in_order(self) -> list[str]:
        """Names in the order they were registered."""
        return list(self._builders)

    def describe(self) -> Iterator[tuple[str, str]]:
        for name in self.names():
            yield name, self._descriptions[name]

    def __contains__(self, name: object) -> bool:
        return name in self._builders

    def __len__(self) -> int:
        return len(self._builders)


MODELS = Registry("model")  # objectives: igm_cli/objectives/
DATASETS = Registry("dataset")  # igm_cli/data/
ARCHS = Registry("arch")  # igm_cli/nets/
DIVERGENCES = Registry("divergence")  # igm_cli/divergences.py
