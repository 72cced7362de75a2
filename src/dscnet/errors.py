"""Exceptions with messages meant for users (the CLI prints them without a traceback)."""

from __future__ import annotations


class DscnetError(Exception):
    """Base class for errors caused by user input (files, configs, arguments)."""


class ConfigError(DscnetError):
    """A config file or override is invalid."""


class DatasetError(DscnetError):
    """A dataset file is missing, unreadable or inconsistent; the message names the file."""


class CheckpointError(DscnetError):
    """A checkpoint or weight file is missing, corrupt or does not match the model."""


class OutputError(DscnetError):
    """An output file or folder cannot be written; the message names the path and the reason."""


class MissingExtraError(DscnetError):
    """An optional dependency is not installed; the message names the pip extra."""

    def __init__(self, feature: str, extra: str, module: str) -> None:
        super().__init__(
            f"{feature} needs the optional package '{module}', which is not installed. "
            f"Install it with: pip install 'dscnet[{extra}]'"
        )
        self.extra = extra
        self.module = module


class NonFiniteLossError(DscnetError):
    """Training produced a NaN/inf loss."""
