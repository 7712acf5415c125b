"""A one-line progress bar on a terminal; on anything else (a log, CI), a line now and then."""

from __future__ import annotations

import sys
import time
from typing import TextIO

BAR_WIDTH = 28
LOG_EVERY = 5.0
"""Seconds between lines when the output is not a terminal."""


class Progress:
    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self._last_log = 0.0
        self._width = 0

    def update(self, label: str, fraction: float, detail: str = "") -> None:
        fraction = min(1.0, max(0.0, fraction))
        filled = round(fraction * BAR_WIDTH)
        line = f"{label:<22} [{'#' * filled}{'.' * (BAR_WIDTH - filled)}] {fraction * 100:5.1f}%  {detail}"
        if self.tty:
            self.stream.write("\r" + line.ljust(self._width))
            self._width = len(line)
            self.stream.flush()
        elif time.monotonic() - self._last_log >= LOG_EVERY:
            self._last_log = time.monotonic()
            self.stream.write(line + "\n")
            self.stream.flush()

    def note(self, message: str) -> None:
        """A line of its own (the bar, if any, starts again below it)."""
        if self.tty and self._width:
            self.stream.write("\r" + " " * self._width + "\r")
            self._width = 0
        self.stream.write(message + "\n")
        self.stream.flush()
        self._last_log = 0.0
