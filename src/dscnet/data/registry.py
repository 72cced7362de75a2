"""Dataset registry: ``data.type`` names -> builders (as the backbone registry).

Add a dataset in the module that defines it, with the decorator::

    from dscnet.data.registry import register_dataset, require_root

    @register_dataset("my_data", class_names=my_class_names)   # class_names: optional
    def build_my_data(cfg: DictConfig, split: str) -> WSSSDataset:
        return MyDataset(require_root(cfg), split, ...)

and import the module in ``dscnet/data/build.py`` (``_BUILT_IN``), or anywhere before
``build_dataset`` runs for a plug-in. ``class_names(cfg)`` is an optional cheap way to get the
class list without reading a whole split; without it the train split is built.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from omegaconf import DictConfig

from dscnet.data.base import WSSSDataset
from dscnet.errors import ConfigError

Builder = Callable[[DictConfig, str], WSSSDataset]
ClassNames = Callable[[DictConfig], list[str]]


@dataclass(frozen=True)
class DatasetSource:
    """How to read one ``data.type``: a split builder and an optional cheap class list."""

    name: str
    build: Builder
    cheap_class_names: ClassNames | None = None

    def class_names(self, cfg: DictConfig) -> list[str]:
        """Class names, background first (reads the train split when there is no cheap way)."""
        if self.cheap_class_names is not None:
            return self.cheap_class_names(cfg)
        return self.build(cfg, str(cfg.data.train_split)).class_names


_SOURCES: dict[str, DatasetSource] = {}


def register_dataset(
    name: str, *, class_names: ClassNames | None = None, overwrite: bool = False
) -> Callable[[Builder], Builder]:
    """Decorator registering ``builder(cfg, split) -> WSSSDataset`` as ``data.type=name``."""

    def decorator(builder: Builder) -> Builder:
        if name in _SOURCES and not overwrite:
            raise ValueError(f"dataset type '{name}' is already registered (pass overwrite=True)")
        _SOURCES[name] = DatasetSource(name, builder, class_names)
        return builder

    return decorator


def list_datasets() -> list[str]:
    """The registered ``data.type`` names, sorted."""
    return sorted(_SOURCES)


def dataset_source(name: str) -> DatasetSource:
    """The source registered as ``name``.

    Raises:
        ConfigError: unknown ``data.type`` (the message lists the known ones).
    """
    try:
        return _SOURCES[name]
    except KeyError:
        raise ConfigError(
            f"data.type '{name}' is unknown (choose one of {', '.join(list_datasets())})"
        ) from None


def require_root(cfg: DictConfig) -> str:
    """``data.root``, which every on-disk dataset needs.

    Raises:
        ConfigError: ``data.root`` is not set.
    """
    root = cfg.data.root
    if root in (None, ""):
        raise ConfigError(f"data.type={cfg.data.type} needs data.root (the dataset folder)")
    return str(root)
