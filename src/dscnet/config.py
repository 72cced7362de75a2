"""Config loading: YAML files with `_base_` inheritance plus `key=value` overrides, typed.

Configs are OmegaConf objects so that users get dotted access (`cfg.train.max_steps`),
interpolation (`${experiment.name}`) and the familiar dot-list override syntax. Every config
is merged into the typed schema of :mod:`dscnet.config_schema` and validated once, right after
loading and overriding: a wrong type, an out-of-range value, an unknown choice or an unknown
key is a :class:`~dscnet.errors.ConfigError` naming the key (and the file), before any work.
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigKeyError, OmegaConfBaseException

from dscnet.config_schema import DscnetConfig, shape_keys, validate
from dscnet.errors import ConfigError

PACKAGED_CONFIG_DIR = Path(__file__).resolve().parent / "configs"


def resolve_config_path(name_or_path: str | Path) -> Path:
    """Return the YAML file for a path or for the bare name of a packaged config.

    ``synth_cpu`` and ``synth_cpu.yaml`` both resolve to the config shipped with dscnet.
    """
    path = Path(name_or_path)
    if path.is_file():
        return path
    for candidate in (PACKAGED_CONFIG_DIR / path.name, PACKAGED_CONFIG_DIR / f"{path.name}.yaml"):
        if candidate.is_file():
            return candidate
    known = sorted(p.stem for p in PACKAGED_CONFIG_DIR.glob("*.yaml"))
    raise ConfigError(f"config file not found: {name_or_path} (packaged configs: {', '.join(known)})")


@functools.cache
def _schema() -> DictConfig:
    """The typed, all-defaults config (built once: OmegaConf.structured is slow); copy it."""
    return OmegaConf.structured(DscnetConfig)


def _chain(path: Path, seen: tuple[Path, ...] = ()) -> list[tuple[Path, DictConfig]]:
    """The files of ``path``'s ``_base_`` chain in merge order (bases first), each parsed."""
    path = path.resolve()
    if path in seen:
        raise ConfigError(f"{path}: circular _base_ chain: {' -> '.join(map(str, seen + (path,)))}")
    try:
        cfg = OmegaConf.load(path)
    except (OSError, OmegaConfBaseException, ValueError, yaml.YAMLError) as exc:
        raise ConfigError(f"{path}: cannot parse YAML: {exc}") from None
    if not isinstance(cfg, DictConfig):
        raise ConfigError(f"{path}: a config must be a mapping at the top level")
    bases = cfg.pop("_base_", None)
    if bases is None:
        return [(path, cfg)]
    if isinstance(bases, str):
        bases = [bases]
    files = []
    for base in bases:
        base_path = (path.parent / base) if not Path(base).is_absolute() else Path(base)
        if not base_path.is_file():
            base_path = resolve_config_path(base)
        files += _chain(base_path, seen + (path,))
    return [*files, (path, cfg)]


def _schema_error(exc: OmegaConfBaseException, prefix: str) -> ConfigError:
    """A ConfigError naming the key for OmegaConf's type or key error; ``prefix`` says where
    the value came from (``"override "``, ``"<file>: "``)."""
    key = exc.full_key or exc.key
    if isinstance(exc, ConfigKeyError):
        return ConfigError(f"{prefix}unknown config key '{key}'")
    first = (exc.msg or str(exc)).splitlines()[0]
    for marker, expected in (
        ("converted to Integer", "an integer"),
        ("converted to Float", "a number"),
        ("not a valid bool", "true or false"),
        ("converted to String", "a string"),
        ("Incompatible value 'None'", "a value (it may not be null)"),
        ("is not a ListConfig", "a list ([a, b, ...])"),
    ):
        if marker in first:
            return ConfigError(f"{prefix}{key}={exc.value!r}: must be {expected}")
    return ConfigError(f"{prefix}{key}: {first}")


def typed(cfg: DictConfig | Mapping[str, Any], source: str = "the config") -> DictConfig:
    """``cfg`` merged into the typed schema (missing keys get their defaults) and validated.

    Use it for configs that did not come through :func:`load_config`, e.g. one stored in a
    checkpoint. ``source`` names where ``cfg`` came from in error messages.
    """
    try:
        merged = OmegaConf.merge(_schema(), cfg)
    except OmegaConfBaseException as exc:
        raise _schema_error(exc, f"{source}: ") from None
    assert isinstance(merged, DictConfig)
    return check(merged, source)


def check(cfg: DictConfig, source: str | None = None) -> DictConfig:
    """Validate ranges and choices of a typed config (interpolations resolved); returns it."""
    where = f"{source}: " if source else ""
    try:
        values = OmegaConf.to_container(cfg, resolve=True)
    except OmegaConfBaseException as exc:
        reason = (exc.msg or str(exc)).splitlines()[0]
        raise ConfigError(f"{where}config key {exc.full_key}: cannot resolve: {reason}") from None
    assert isinstance(values, dict)
    problems = validate(values)
    if problems:
        plural = "s" if len(problems) > 1 else ""
        raise ConfigError(f"{where}invalid config value{plural}: " + "; ".join(problems))
    return cfg


def load_config(name_or_path: str | Path = "synth_cpu", overrides: Sequence[str] = ()) -> DictConfig:
    """Load a config (with its `_base_` chain), apply ``key.path=value`` overrides, validate.

    Overrides must name keys that exist in the config, so that a typo fails loudly
    instead of being ignored.
    """
    cfg = copy.deepcopy(_schema())
    for path, part in _chain(resolve_config_path(name_or_path)):
        try:
            # unsafe_merge: no copy of cfg per file (it is our own copy of the schema).
            cfg = OmegaConf.unsafe_merge(cfg, part)
        except OmegaConfBaseException as exc:
            raise _schema_error(exc, f"{path}: ") from None
    assert isinstance(cfg, DictConfig)
    return apply_overrides(cfg, overrides)


def apply_overrides(cfg: DictConfig, overrides: Sequence[str]) -> DictConfig:
    """Return ``cfg`` with dot-list overrides applied, typed and validated.

    Unknown keys, values of the wrong type and out-of-range values raise ConfigError.
    ``cfg`` may be a plain config (e.g. from a checkpoint): it is merged into the schema.
    """
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override '{item}' is not of the form key.path=value")
        key = item.split("=", 1)[0].strip()
        if OmegaConf.select(cfg, key, default="__missing__") == "__missing__":
            raise ConfigError(f"override '{item}': unknown config key '{key}'")
    try:
        dotlist = OmegaConf.from_dotlist(list(overrides))
    except OmegaConfBaseException as exc:
        raise ConfigError(f"invalid override: {exc}") from None
    if OmegaConf.get_type(cfg) is not DscnetConfig:
        cfg = typed(cfg)
    try:
        merged = OmegaConf.merge(cfg, dotlist)
    except OmegaConfBaseException as exc:
        raise _schema_error(exc, "override ") from None
    assert isinstance(merged, DictConfig)
    return check(merged)


def shape_changes(saved: Mapping[str, Any] | DictConfig, current: DictConfig) -> list[str]:
    """``"key: saved -> current"`` for each shape-changing key (``setting(shape=True)``) whose
    value differs between a checkpoint's config and ``current`` (a resume cannot load those)."""
    saved_cfg = OmegaConf.create(saved) if not isinstance(saved, DictConfig) else saved
    changes = []
    for key in shape_keys():
        old = OmegaConf.select(saved_cfg, key, default=None)
        new = OmegaConf.select(current, key, default=None)
        if old != new:
            changes.append(f"{key}: {old!r} -> {new!r}")
    return changes


def save_config(cfg: DictConfig, path: str | Path) -> None:
    """Write the fully resolved config (interpolations expanded) as YAML, atomically."""
    from dscnet.utils.io import atomic_write_text  # local: utils.io imports torch

    atomic_write_text(path, OmegaConf.to_yaml(cfg, resolve=True))
