"""Inspecting dead letters, for `threadcast dlq list|show|replay|purge <queue>`."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import TypeVar

from threadcast.bus.factory import open_queue
from threadcast.bus.queue import DeadLetter, WorkQueue

T = TypeVar("T")

SHOW_SCAN_LIMIT = 10_000
"""Dead letters `find` reads through (the queue interface lists them; it has no lookup)."""
SUMMARY_ERROR_LENGTH = 100


async def on_queue(url: str, operation: Callable[[WorkQueue], Awaitable[T]]) -> T:
    """Open the work queue at `url`, run `operation` on it, close it."""
    queue = open_queue(url)
    await queue.start()
    try:
        return await operation(queue)
    finally:
        await queue.close()


async def find(queue: WorkQueue, name: str, message_id: str) -> DeadLetter | None:
    """The dead letter `message_id` of queue `name`, among the first `SHOW_SCAN_LIMIT`."""
    letters = await queue.dead_letters(name, limit=SHOW_SCAN_LIMIT)
    return next((letter for letter in letters if letter.message_id == message_id), None)


def _when(letter: DeadLetter) -> str:
    return datetime.fromtimestamp(letter.dead_at, UTC).isoformat(timespec="seconds")


def summary(letter: DeadLetter) -> str:
    """One line: id, attempts, when, and the start of the error."""
    error = " ".join(letter.error.split())
    if len(error) > SUMMARY_ERROR_LENGTH:
        error = error[: SUMMARY_ERROR_LENGTH - 3] + "..."
    return f"{letter.message_id}\t{letter.attempts} attempts\t{_when(letter)}\t{error}"


def details(letter: DeadLetter) -> str:
    """Every field, the body as text when it is UTF-8."""
    try:
        body = letter.body.decode()
    except UnicodeDecodeError:
        body = repr(letter.body)
    lines = [
        f"message id: {letter.message_id}",
        f"dead at:    {_when(letter)}",
        f"attempts:   {letter.attempts}",
        f"error:      {letter.error}",
        "headers:",
        *(f"  {name}: {value}" for name, value in sorted(letter.headers.items())),
        "body:",
        body,
    ]
    return "\n".join(lines)
