"""Runs the scenarios one after another and measures each in five phases:

1. connect: the client processes open every subscription (at most `connect_concurrency` being
   opened at once per process): new connections/s;
2. confirm: priming messages on every channel reach every subscriber, so no post goes out
   before its readers are there; server memory per connection is read now; then, for threadcast,
   one warm-up post must come through the whole pipeline;
3. post: the poster sends posts for `duration` seconds while the subscribers record receipts;
4. drain: up to `drain` seconds more, until deliveries stop coming in;
5. stop: the clients hand back their records, which `analysis` matches.
"""

from __future__ import annotations

import multiprocessing
import resource
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from datetime import datetime, timezone
from multiprocessing.connection import Connection, wait
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any, cast
from urllib.parse import quote

import httpx
import orjson

from threadcast.bench import analysis
from threadcast.bench.config import BenchConfig
from threadcast.bench.machine import describe_machine
from threadcast.bench.plots import write_plots
from threadcast.bench.poster import PosterJob, PosterResult, poster_main
from threadcast.bench.progress import Progress
from threadcast.bench.protocols import prime_message
from threadcast.bench.report import add_ratios
from threadcast.bench.scenarios import SCENARIOS, Target
from threadcast.bench.servers import ServerError, cpu_seconds, rss_kb
from threadcast.bench.subscribers import ConnectReport, WorkerJob, WorkerResult, worker_main
from threadcast.bench.workload import plan_subscribers, share_out

SPAWN_GRACE = 30.0
"""Seconds a client process may take to start, on top of the phase's own time."""
QUIET = 1.0
"""The drain ends once no delivery arrived for this long."""
MIN_BUCKET = 0.5
PRIME_EVERY = 0.5
WARM_UP_TIMEOUT = 60.0
PRIME_HEADERS = {"Content-Type": "application/json"}


class MeasurementError(Exception):
    """The measurement could not go on (a client process died, nothing connected...)."""


def raise_open_files_limit() -> None:
    """As many sockets as the system lets this user have, for us and the processes we start."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


class Fleet:
    """The client processes of one scenario and their pipes."""

    def __init__(self) -> None:
        self.context = multiprocessing.get_context("spawn")
        self.pipes: dict[str, Connection] = {}
        self.processes: dict[str, BaseProcess] = {}
        self.finished: set[str] = set()

    def start(self, key: str, target: Callable[..., None], job: object) -> None:
        mine, theirs = self.context.Pipe()
        process = self.context.Process(target=target, args=(job, theirs), name=f"bench-{key}", daemon=True)
        process.start()
        theirs.close()
        self.pipes[key] = mine
        self.processes[key] = process

    def send(self, keys: list[str], message: str) -> None:
        for key in keys:
            self.pipes[key].send(message)

    def receive(self, timeout: float) -> list[tuple[str, tuple[Any, ...]]]:
        """Messages that arrived within `timeout` seconds. A process that ends after handing
        back its result is done; one that ends before is an error."""
        by_pipe = {pipe: key for key, pipe in self.pipes.items() if key not in self.finished}
        messages: list[tuple[str, tuple[Any, ...]]] = []
        for ready in wait(list(by_pipe), timeout):
            pipe = cast(Connection, ready)
            key = by_pipe[pipe]
            try:
                while pipe.poll():
                    message = pipe.recv()
                    messages.append((key, message))
                    if message[0] == "result":
                        self.finished.add(key)
            except EOFError:
                if key not in self.finished:
                    raise MeasurementError(f"client process {key} ended without its results") from None
        return messages

    def close(self) -> None:
        """Let the processes that handed back their results exit; end the others now."""
        for key, process in self.processes.items():
            if key in self.finished:
                process.join(5.0)
            if process.is_alive():
                process.terminate()
                process.join(5.0)
        for pipe in self.pipes.values():
            pipe.close()


class Measurement:
    """One scenario's five phases against a started target."""

    def __init__(self, config: BenchConfig, target: Target, progress: Progress, name: str) -> None:
        self.config = config
        self.target = target
        self.progress = progress
        self.name = name
        self.specs = plan_subscribers(config.subscribers, config.threads, config.zipf, config.mix, config.seed)
        self.channels = [f"thread:{thread_id}" for thread_id in target.thread_ids]
        self.fleet = Fleet()
        self.workers = [str(n) for n in range(config.client_processes())]
        self.delivered: dict[str, int] = {}
        self.open: dict[str, int] = {}
        self.primed: dict[str, int] = {}
        self.accepted = 0

    def run(self) -> dict[str, Any]:
        try:
            return self._run()
        finally:
            self.fleet.close()

    def _run(self) -> dict[str, Any]:
        edge_before = rss_kb(self.target.edge_pids())
        server_before = rss_kb(self.target.server_pids())
        for key, share in zip(self.workers, share_out(self.specs, len(self.workers))):
            self.fleet.start(
                key,
                worker_main,
                WorkerJob(int(key), self.target.edge, self.channels, share, self.config.connect_concurrency),
            )
        connected = self.connect()
        unconfirmed = self.confirm(connected)
        edge_connected = rss_kb(self.target.edge_pids())
        server_connected = rss_kb(self.target.server_pids())
        warm_up = self.warm_up()
        poster, cpu_window = self.post()
        results = self.stop()
        return self.figures_of(
            results,
            poster,
            warm_up,
            connected,
            unconfirmed,
            cpu_window,
            memory=(edge_before, edge_connected, server_before, server_connected),
        )

    def _absorb(self, key: str, message: tuple[Any, ...]) -> None:
        if message[0] == "tick" and key == "poster":
            self.accepted = message[2]
        elif message[0] == "tick":
            self.delivered[key], self.open[key], self.primed[key] = message[2], message[3], message[4]

    def connect(self) -> dict[str, ConnectReport]:
        """Phase 1: wait for every client process's first attempts."""
        done: dict[str, ConnectReport] = {}
        deadline = time.monotonic() + self.config.connect_timeout + SPAWN_GRACE
        while len(done) < len(self.workers):
            if time.monotonic() > deadline:
                raise MeasurementError(f"subscribers still connecting after {self.config.connect_timeout:.0f} s")
            for key, message in self.fleet.receive(0.1):
                if message[0] == "connected":
                    done[key] = message[2]
                self._absorb(key, message)
            opened = sum(self.open.values())
            self.progress.update(
                f"{self.name}: connect", opened / len(self.specs), f"{opened:,}/{len(self.specs):,} subscribers"
            )
        if not sum(report.ok for report in done.values()):
            raise MeasurementError("no subscriber could connect")
        return done

    def confirm(self, connected: dict[str, ConnectReport]) -> int:
        """Phase 2: publish a priming message on every channel (again every `PRIME_EVERY`
        seconds) until every connected subscriber got one, or the connect timeout; returns how
        many never did. (Nchan's own subscriber counts are not exact with several workers.)"""
        goal = sum(report.ok for report in connected.values())
        channels = sorted({self.channels[spec.thread] for spec in self.specs})
        deadline = time.monotonic() + self.config.connect_timeout
        round_, next_round = 0, 0.0
        with httpx.Client(base_url=self.target.edge.url, timeout=5.0) as client:
            while True:
                for key, message in self.fleet.receive(0.05):
                    self._absorb(key, message)
                primed = sum(self.primed.values())
                self.progress.update(f"{self.name}: confirm", primed / goal, f"{primed:,}/{goal:,} subscribers reached")
                if primed >= goal or time.monotonic() > deadline:
                    return max(0, goal - primed)
                if time.monotonic() >= next_round:
                    round_ += 1
                    for channel in channels:
                        path = f"/pub/{quote(channel, safe=':')}"
                        client.post(
                            path, content=prime_message(channel, round_), headers=PRIME_HEADERS
                        ).raise_for_status()
                    next_round = time.monotonic() + PRIME_EVERY

    def warm_up(self) -> set[int]:
        """Phase 2b, threadcast scenarios: one post to the thread with the most subscribers must
        reach them before the measurement starts, so every consumer of the pipeline is running
        (a Kafka consumer group can take seconds to get its partitions). Returns its post id."""
        if self.target.raw_nchan:
            return set()
        thread = Counter(spec.thread for spec in self.specs).most_common(1)[0][0]
        before = sum(self.delivered.values())
        url = f"{self.target.poster.url}/api/v1/threads/{self.target.thread_ids[thread]}/posts"
        response = httpx.post(url, json={"author_name": "bench", "message": "warm-up"}, timeout=10.0)
        response.raise_for_status()
        deadline = time.monotonic() + WARM_UP_TIMEOUT
        while sum(self.delivered.values()) <= before:
            if time.monotonic() > deadline:
                raise MeasurementError(f"a warm-up post reached no subscriber within {WARM_UP_TIMEOUT:.0f} s")
            for key, message in self.fleet.receive(0.1):
                self._absorb(key, message)
            self.progress.update(f"{self.name}: warm-up", 0.0, "one post through the pipeline")
        return {int(response.json()["id"])}

    def post(self) -> tuple[PosterResult, dict[str, float]]:
        """Phases 3 and 4: post for `duration` seconds, then drain. Returns the poster's records
        and the server CPU time and wall time of the measured window."""
        c = self.config
        job = PosterJob(
            self.target.poster,
            self.target.raw_nchan,
            self.target.thread_ids,
            c.zipf,
            c.seed,
            c.rate,
            c.inflight,
            c.duration,
        )
        self.fleet.start("poster", poster_main, job)
        result: PosterResult | None = None
        began: tuple[float, float] | None = None
        deadline = time.monotonic() + c.duration + SPAWN_GRACE
        while result is None:
            if time.monotonic() > deadline:
                raise MeasurementError("the poster did not finish")
            for key, message in self.fleet.receive(0.1):
                if key == "poster" and message[0] == "result":
                    result = message[1]
                elif key == "poster" and began is None:
                    began = (time.monotonic(), cpu_seconds(self.target.server_pids()))
                    self.fleet.send(self.workers, "go")
                self._absorb(key, message)
            elapsed = time.monotonic() - began[0] if began else 0.0
            self.progress.update(
                f"{self.name}: post",
                elapsed / c.duration,
                f"{elapsed:4.1f}/{c.duration:g} s  {self.accepted:,} posts  {sum(self.delivered.values()):,} delivered",
            )
        began = began or (time.monotonic(), cpu_seconds(self.target.server_pids()))
        self.drain()
        ended = (time.monotonic(), cpu_seconds(self.target.server_pids()))
        return result, {
            "server_cpu_seconds": ended[1] - began[1],
            "seconds": ended[0] - began[0],
            "drain_end": ended[0],
        }

    def drain(self) -> None:
        last_total, last_change = sum(self.delivered.values()), time.monotonic()
        deadline = last_change + self.config.drain
        while time.monotonic() < deadline and time.monotonic() - last_change < QUIET:
            for key, message in self.fleet.receive(0.1):
                self._absorb(key, message)
            total = sum(self.delivered.values())
            if total != last_total:
                last_total, last_change = total, time.monotonic()
            self.progress.update(f"{self.name}: drain", 1.0, f"{total:,} delivered")

    def stop(self) -> list[WorkerResult]:
        self.fleet.send(self.workers, "stop")
        results: dict[str, WorkerResult] = {}
        deadline = time.monotonic() + 60.0
        while len(results) < len(self.workers):
            if time.monotonic() > deadline:
                raise MeasurementError("client processes did not hand back their records")
            for key, message in self.fleet.receive(0.2):
                if message[0] == "result":
                    results[key] = message[1]
        return list(results.values())

    def figures_of(
        self,
        workers: list[WorkerResult],
        poster: PosterResult,
        warm_up: set[int],
        connected: dict[str, ConnectReport],
        unconfirmed: int,
        cpu_window: dict[str, float],
        memory: tuple[int, int, int, int],
    ) -> dict[str, Any]:
        c = self.config
        matched = analysis.match(self.specs, workers, poster, ignored=warm_up)
        start, end = poster.started, poster.started + c.duration
        receipt_times = [t for w in workers for t in w.receipt_time]
        ok = sum(report.ok for report in connected.values())
        connect_seconds = max(r.finished for r in connected.values()) - min(r.started for r in connected.values())
        connect_cpu = max(
            r.cpu_seconds / (r.finished - r.started) * 100 if r.finished > r.started else 0.0
            for r in connected.values()
        )
        errors = Counter(poster.errors)
        for worker in workers:
            errors.update(worker.errors)
        errors["subscribers failed to connect"] += len(self.specs) - ok
        errors["subscribers never reached by a priming message"] += unconfirmed
        errors = Counter({kind: n for kind, n in errors.items() if n})
        edge_before, edge_connected, server_before, server_connected = memory
        window = cpu_window["seconds"]
        client_cpu = [w.cpu_seconds / w.measured_seconds * 100 for w in workers if w.measured_seconds > 0]
        bucket = max(MIN_BUCKET, c.duration / 100)
        return {
            "subscribers": {
                "requested": len(self.specs),
                "connected": ok,
                "by_transport": dict(Counter(spec.transport for spec in self.specs)),
            },
            "connect": {
                "seconds": round(connect_seconds, 3),
                "per_second": round(ok / connect_seconds, 1) if connect_seconds > 0 else None,
                "busiest_client_cpu_percent": round(connect_cpu, 1),
            },
            "posts": {
                "attempted": poster.attempted,
                "accepted": len(poster.accepted),
                "not_sent": poster.not_sent,
                "per_second": round(analysis.count_between(poster.accepted, start, end) / c.duration, 1),
                "response_ms": analysis.summary([(a - s) * 1000 for s, a in zip(poster.sent, poster.accepted)]),
            },
            "deliveries": {
                "expected": matched.expected,
                "received": matched.received,
                "lost": matched.lost,
                "duplicates": matched.duplicates,
                "unexpected": matched.unexpected,
                "per_second": round(analysis.count_between(receipt_times, start, end) / c.duration, 1),
            },
            "deliveries_by_transport": matched.transports(),
            "latency_ms": analysis.summary(matched.latencies_ms),
            "latency_ms_by_transport": {
                name: analysis.summary(values) for name, values in matched.by_transport.items()
            },
            "latency_cdf_ms": analysis.cdf(matched.latencies_ms),
            "latency_from_sent_ms": analysis.summary(matched.from_sent_ms),
            "latency_from_sent_cdf_ms": analysis.cdf(matched.from_sent_ms),
            "errors": dict(errors),
            "errors_total": sum(errors.values()),
            "server": {
                "edge_rss_mb_before": round(edge_before / 1024, 1),
                "edge_rss_mb_connected": round(edge_connected / 1024, 1),
                "rss_kb_per_connection": round((edge_connected - edge_before) / ok, 2),
                "rss_mb_connected": round(server_connected / 1024, 1),
                "rss_mb_before": round(server_before / 1024, 1),
                "cpu_percent": round(cpu_window["server_cpu_seconds"] / window * 100, 1) if window > 0 else None,
            },
            "client": {
                "processes": len(workers) + 1,
                "subscriber_cpu_percent": [round(p, 1) for p in client_cpu],
                "poster_cpu_percent": round(poster.cpu_seconds / (poster.finished - poster.started) * 100, 1),
                "busiest_cpu_percent": round(max(client_cpu, default=0.0), 1),
                "max_rss_mb": round(max(w.max_rss_kb for w in workers) / 1024, 1),
            },
            "timeline": {
                "bucket_s": bucket,
                "delivered_per_s": analysis.rate_series(receipt_times, start, cpu_window["drain_end"], bucket),
                "accepted_per_s": analysis.rate_series(poster.accepted, start, cpu_window["drain_end"], bucket),
            },
        }


def run_scenario(config: BenchConfig, name: str, workdir: Path, progress: Progress) -> dict[str, Any]:
    scenario = SCENARIOS[name]
    entry: dict[str, Any] = {"name": name, "description": scenario.description}
    reason = scenario.unavailable(config)
    if reason is not None:
        progress.note(f"{name}: unavailable: {reason}")
        return {**entry, "status": "unavailable", "reason": reason}
    progress.note(f"{name}: starting ({scenario.description})")
    try:
        with scenario.running(config, workdir) as target:
            figures = Measurement(config, target, progress, name).run()
    except (ServerError, MeasurementError, httpx.HTTPError) as exc:
        progress.note(f"{name}: failed: {exc}")
        return {**entry, "status": "failed", "reason": str(exc)}
    progress.note(f"{name}: done")
    return {**entry, "status": "ok", **figures}


def run_bench(config: BenchConfig, progress: Progress | None = None) -> tuple[dict[str, Any], Path]:
    """Every scenario in order; writes `<out>/<time>/results.json` and the plots; returns the
    results and that folder."""
    progress = progress or Progress()
    raise_open_files_limit()
    started = datetime.now(timezone.utc)
    machine = describe_machine()
    with tempfile.TemporaryDirectory(prefix="threadcast-bench-") as tmp:
        scenarios = [run_scenario(config, name, Path(tmp) / name, progress) for name in config.scenarios]
    add_ratios(scenarios)
    report = {
        "threadcast_bench": 1,
        "started_at": started.isoformat(timespec="seconds"),
        "finished_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": machine,
        "config": config.as_dict(),
        "scenarios": scenarios,
    }
    run_dir = config.out / started.strftime("%Y%m%d-%H%M%S")
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "results.json").write_bytes(orjson.dumps(report, option=orjson.OPT_INDENT_2))
    write_plots(report, run_dir)
    return report, run_dir
