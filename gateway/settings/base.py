"""What every section of the settings is built on, and the error a bad config raises."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

__all__ = ["ConfigError", "_Section"]


class ConfigError(Exception):
    """The configuration is unusable; the message names each bad key."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
