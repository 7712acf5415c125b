"""Exceptions a handler raises to steer delivery."""

from __future__ import annotations


class Reject(Exception):
    """The message can never succeed: dead-letter it now, without retries.

    Raise it from a handler or a pipeline stage, with the reason that ends up in the
    dead-letter record (for example "receiver refused the payload: HTTP 400")."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class Undecodable(Reject):
    """The message body does not decode into the handler's model."""


class BackendMissing(RuntimeError):
    """A service needs a backend (log, queue, edge, inbox, database) the runner was not given."""
