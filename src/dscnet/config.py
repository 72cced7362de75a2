"""Config loading: YAML files with `_base_` inheritance plus `key=value` overrides.

Configs are OmegaConf objects so that users get dotted access (`cfg.train.max_steps`),
interpolation (`${experiment.name}`) and the familiar dot-list override syntax.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import yaml
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

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


def _load_with_bases(path: Path, seen: tuple[Path, ...] = ()) -> DictConfig:
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
        return cfg
    if isinstance(bases, str):
        bases = [bases]
    merged = OmegaConf.create()
    for base in bases:
        base_path = (path.parent / base) if not Path(base).is_absolute() else Path(base)
        if not base_path.is_file():
            base_path = resolve_config_path(base)
        merged = OmegaConf.merge(merged, _load_with_bases(base_path, seen + (path,)))
    return OmegaConf.merge(merged, cfg)


def load_config(name_or_path: str | Path = "synth_cpu", overrides: Sequence[str] = ()) -> DictConfig:
    """Load a config (with its `_base_` chain) and apply ``key.path=value`` overrides.

    Overrides must name keys that exist in the config, so that a typo fails loudly
    instead of being ignored.
    """
    cfg = _load_with_bases(resolve_config_path(name_or_path))
    return apply_overrides(cfg, overrides)


def apply_overrides(cfg: DictConfig, overrides: Sequence[str]) -> DictConfig:
    """Return ``cfg`` with dot-list overrides applied; unknown keys raise ConfigError."""
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override '{item}' is not of the form key.path=value")
        key = item.split("=", 1)[0].strip()
        if OmegaConf.select(cfg, key, default="__missing__") == "__missing__":
            raise ConfigError(f"override '{item}': unknown config key '{key}'")
    try:
        merged = OmegaConf.merge(cfg, OmegaConf.from_dotlist(list(overrides)))
    except OmegaConfBaseException as exc:
        raise ConfigError(f"invalid override: {exc}") from None
    assert isinstance(merged, DictConfig)
    return merged


def save_config(cfg: DictConfig, path: str | Path) -> None:
    """Write the fully resolved config (interpolations expanded) as YAML."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(OmegaConf.to_yaml(cfg, resolve=True))
