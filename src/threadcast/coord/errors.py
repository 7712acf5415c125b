"""Errors of the coordination backends."""

from __future__ import annotations


class CoordinationError(Exception):
    """The coordination backend failed or is closed."""


class ConfigError(CoordinationError, ValueError):
    """A configuration path that the tree lacks, or a value that does not validate."""


class NotLeaderError(CoordinationError):
    """The term is over: another holder may be leader now, so the duty must stop."""


class BackendUnavailable(CoordinationError):
    """The backend did not answer (connection lost, session expired, storage locked)."""
