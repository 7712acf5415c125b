"""The server processes a scenario starts (`threadcast up`, a private nginx + Nchan) and what the
bench reads about them from /proc: resident memory and CPU time."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
EXCEPTION_LINE = re.compile(r"[\w.]*(Error|Exception|Refused)\b[^ ]*: ")


class ServerError(Exception):
    """A server of the scenario did not start; the message says why."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def reachable(host: str, port: int, timeout: float = 2.0) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def with_children(pid: int) -> list[int]:
    """`pid` and its direct children (an nginx master and its workers)."""
    children = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rpartition(")")[2].split()[1]) == pid:
                children.append(int(entry.name))
    return [pid, *children]


def rss_kb(pids: list[int]) -> int:
    """Resident memory of the processes (VmRSS in /proc/<pid>/status), added up."""
    total = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            continue
    return total


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU time the processes used so far (/proc/<pid>/stat)."""
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])
    return total / CLOCK_TICKS


def log_tail(path: Path, lines: int = 15) -> str:
    """The last lines of a log, led by its last exception line (the likely cause) if any."""
    try:
        tail = path.read_text(errors="replace").splitlines()[-lines:]
    except OSError:
        return ""
    causes = [line for line in tail if EXCEPTION_LINE.match(line)]
    return "\n".join(causes[-1:] + tail)


class ThreadcastProcess:
    """`threadcast up` on a port of its own and a fresh data folder, with the given environment."""

    def __init__(self, port: int, data_dir: Path, env: dict[str, str]) -> None:
        self.port = port
        self.data_dir = data_dir
        self.env = env
        self.log_path = data_dir / "up.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        command = [sys.executable, "-m", "threadcast", "up", "--port", str(self.port), "--data-dir", str(self.data_dir)]
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=self.env)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise ServerError(f"threadcast up exited with {self.proc.returncode}: {log_tail(self.log_path)}")
            try:
                if httpx.get(f"{self.url}/readyz", timeout=2.0).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise ServerError(f"threadcast up was not ready within {timeout:.0f} s: {log_tail(self.log_path)}")

    def pids(self) -> list[int]:
        return [self.proc.pid] if self.proc is not None and self.proc.poll() is None else []

    def stop(self, timeout: float = 20.0) -> None:
        stop_process(self.proc, signal.SIGTERM, timeout)


class NginxProcess:
    """nginx in the foreground (`daemon off`) with a configuration of the bench's own, so that
    it is this process's child and never touches the shared development nginx."""

    def __init__(self, binary: str, prefix: Path, config: str, port: int) -> None:
        self.binary = binary
        self.prefix = prefix
        self.config = config
        self.port = port
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 20.0) -> None:
        self.prefix.mkdir(parents=True, exist_ok=True)
        self.prefix.chmod(0o755)  # workers may run as another user (nobody) when started by root
        conf = self.prefix / "nginx.conf"
        conf.write_text(self.config)
        log_path = self.prefix / "stderr.log"
        with open(log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [self.binary, "-p", str(self.prefix), "-c", str(conf), "-g", "daemon off;"],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                errors = log_tail(log_path) + "\n" + log_tail(self.prefix / "error.log")
                raise ServerError(f"nginx exited with {self.proc.returncode}: {errors.strip()}")
            if reachable("127.0.0.1", self.port, timeout=0.5):
                return
            time.sleep(0.1)
        raise ServerError(f"nginx did not listen on port {self.port} within {timeout:.0f} s")

    def pids(self) -> list[int]:
        return with_children(self.proc.pid) if self.proc is not None and self.proc.poll() is None else []

    def stop(self, timeout: float = 20.0) -> None:
        stop_process(self.proc, signal.SIGTERM, timeout)


def stop_process(proc: subprocess.Popen[bytes] | None, sig: int, timeout: float) -> None:
    """Ask the process to stop; kill it if it has not within `timeout` seconds."""
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(sig)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
