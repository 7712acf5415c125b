"""The four scenarios: what each one starts, and why one cannot run here.

- `embedded`: `threadcast up` on its embedded defaults (SQLite log and queue, Python edge).
- `brokers`: the same with the event log on Kafka and the work queue on RabbitMQ (the servers
  `dev/services` runs; a topic and a queue of the run's own, so other users are not disturbed).
- `nchan`: embedded log and queue, nginx + Nchan as the push edge, configured by
  `render_nginx_config` exactly as `threadcast edge config` would, with the API behind it.
- `raw-nchan`: nginx + Nchan alone with the same buffers, published to straight at `/pub/`:
  no threadcast in the path, the ceiling the others are compared with.

The Nchan scenarios start a private nginx on free ports rather than the shared development one,
whose API port (where the resume guard is asked) other engineers' test runs use.
Every threadcast runs without the caller's `THREADCAST_*` variables, on defaults plus the
scenario's backends, so that runs compare like with like.
"""

from __future__ import annotations

import os
import shutil
import uuid
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import httpx

from threadcast.bench.config import BenchConfig
from threadcast.bench.http1 import Endpoint
from threadcast.bench.servers import NginxProcess, ThreadcastProcess, free_port, reachable
from threadcast.config import Settings
from threadcast.edge.nginx_config import DEBIAN_NCHAN_MODULE, Address, EdgeConfigOptions, render_nginx_config

STARTUP_TIMEOUT = 90.0
BENCH_FORUM = "bench"


@dataclass
class Target:
    """What the clients of one scenario talk to, and which processes the figures are read from."""

    edge: Endpoint
    """Where subscribers connect, and whose `GET /pub/{channel}` counts them."""
    poster: Endpoint
    """The threadcast API, or for raw Nchan the edge itself."""
    raw_nchan: bool
    thread_ids: list[int]
    server_pids: Callable[[], list[int]]
    """Every server process the scenario started."""
    edge_pids: Callable[[], list[int]]
    """The processes that hold the subscribers' connections."""


class Scenario(ABC):
    name: str
    description: str

    def unavailable(self, config: BenchConfig) -> str | None:
        """Why this scenario cannot run here, or None."""
        return None

    @abstractmethod
    def running(self, config: BenchConfig, workdir: Path) -> AbstractContextManager[Target]:
        """Start the servers, yield the target, stop them."""


def threadcast_env(overrides: dict[str, str]) -> dict[str, str]:
    return {**{k: v for k, v in os.environ.items() if not k.startswith("THREADCAST_")}, **overrides}


@contextmanager
def threadcast_up(workdir: Path, env: dict[str, str], port: int | None = None) -> Iterator[ThreadcastProcess]:
    process = ThreadcastProcess(port or free_port(), workdir / "threadcast", threadcast_env(env))
    try:
        process.start(STARTUP_TIMEOUT)
        yield process
    finally:
        process.stop()


def create_threads(api_url: str, count: int) -> list[int]:
    """A forum of the bench's own and `count` threads in it; their ids."""
    with httpx.Client(base_url=api_url, timeout=30.0) as client:
        client.post("/api/v1/forums", json={"name": BENCH_FORUM, "title": "threadcast bench"}).raise_for_status()
        ids = []
        for n in range(count):
            response = client.post("/api/v1/threads", json={"forum": BENCH_FORUM, "identifier": f"thread-{n}"})
            response.raise_for_status()
            ids.append(int(response.json()["id"]))
        return ids


def threadcast_target(process: ThreadcastProcess, config: BenchConfig, nginx: NginxProcess | None = None) -> Target:
    """The target of a threadcast scenario; subscribers go to `nginx` when there is one."""
    api = Endpoint.parse(process.url)
    edge_pids = nginx.pids if nginx is not None else process.pids
    return Target(
        edge=Endpoint("127.0.0.1", nginx.port) if nginx is not None else api,
        poster=api,
        raw_nchan=False,
        thread_ids=create_threads(process.url, config.threads),
        server_pids=lambda: process.pids() + (nginx.pids() if nginx is not None else []),
        edge_pids=edge_pids,
    )


class Embedded(Scenario):
    name = "embedded"
    description = "threadcast up on embedded defaults: SQLite log and queue, embedded Python edge"

    @contextmanager
    def running(self, config: BenchConfig, workdir: Path) -> Iterator[Target]:
        with threadcast_up(workdir, {}) as process:
            yield threadcast_target(process, config)


def broker_address(url: str) -> tuple[str, int] | None:
    """host and port of the first server in a kafka:// or amqp:// URL."""
    parts = urlsplit(url.split(",")[0] if url.startswith("kafka://") else url)
    try:
        port = parts.port
    except ValueError:
        return None
    default = 9092 if parts.scheme == "kafka" else 5672
    return (parts.hostname, port or default) if parts.hostname else None


class Brokers(Scenario):
    name = "brokers"
    description = "threadcast up with the event log on Kafka and the work queue on RabbitMQ, embedded edge"

    def unavailable(self, config: BenchConfig) -> str | None:
        for what, url, option, service in (
            ("Kafka", config.kafka_url, "--kafka-url", "kafka"),
            ("RabbitMQ", config.amqp_url, "--amqp-url", "rabbitmq"),
        ):
            if not url:
                return f"no {what} URL: give {option} (`dev/services env` prints it)"
            address = broker_address(url)
            if address is None:
                return f"{option} {url!r} names no host"
            if not reachable(*address):
                return f"{what} at {address[0]}:{address[1]} does not answer (start it: dev/services up {service})"
        return None

    @contextmanager
    def running(self, config: BenchConfig, workdir: Path) -> Iterator[Target]:
        suffix = uuid.uuid4().hex[:8]
        env = {
            "THREADCAST_LOG_URL": config.kafka_url,
            "THREADCAST_QUEUE_URL": config.amqp_url,
            "THREADCAST_EVENTS_TOPIC": f"bench-events-{suffix}",
            "THREADCAST_FORMAT_QUEUE": f"bench.format.{suffix}",
        }
        with threadcast_up(workdir, env) as process:
            yield threadcast_target(process, config)


def nginx_binary(config: BenchConfig) -> str | None:
    if config.nginx:
        return config.nginx if os.access(config.nginx, os.X_OK) else None
    found = shutil.which("nginx")
    return found or ("/usr/sbin/nginx" if os.access("/usr/sbin/nginx", os.X_OK) else None)


def nchan_unavailable(config: BenchConfig) -> str | None:
    if nginx_binary(config) is None:
        return f"nginx not found{f' at {config.nginx}' if config.nginx else ''} (dev/services up nginx installs it)"
    module = config.nchan_module or DEBIAN_NCHAN_MODULE
    if not Path(module).is_file():
        return f"the Nchan module {module} is missing (dev/services up nginx installs it)"
    return None


def default_settings() -> Settings:
    """threadcast's defaults, as the scenarios' threadcast (run without THREADCAST_* variables) has them."""
    return Settings.model_construct()


@contextmanager
def private_nginx(config: BenchConfig, workdir: Path, port: int, text: str) -> Iterator[NginxProcess]:
    binary = nginx_binary(config)
    assert binary is not None, "checked by unavailable()"
    nginx = NginxProcess(binary, workdir / "nginx", text, port)
    try:
        nginx.start()
        yield nginx
    finally:
        nginx.stop()


class Nchan(Scenario):
    name = "nchan"
    description = "threadcast up (embedded log and queue) publishing to nginx + Nchan, which holds the subscribers"

    def unavailable(self, config: BenchConfig) -> str | None:
        return nchan_unavailable(config)

    @contextmanager
    def running(self, config: BenchConfig, workdir: Path) -> Iterator[Target]:
        nginx_port, api_port = free_port(), free_port()
        options = EdgeConfigOptions(
            listen=Address("127.0.0.1", nginx_port),
            api=Address("127.0.0.1", api_port),
            prefix=(workdir / "nginx").resolve(),
            module=config.nchan_module or DEBIAN_NCHAN_MODULE,
        )
        text = render_nginx_config(options, default_settings())
        with private_nginx(config, workdir, nginx_port, text) as nginx:
            env = {"THREADCAST_EDGE_URL": f"nchan+http://127.0.0.1:{nginx_port}"}
            with threadcast_up(workdir, env, port=api_port) as process:
                yield threadcast_target(process, config, nginx)


RAW_NCHAN_CONFIG = """\
# nginx + Nchan alone, for `threadcast bench` (raw-nchan): the buffers, limits and subscriber
# settings of `threadcast edge config`, without the API behind it.
load_module "{module}";
pid "{prefix}/nginx.pid";
error_log "{prefix}/error.log" warn;
worker_processes auto;
worker_rlimit_nofile {rlimit_nofile};
events {{
    worker_connections {worker_connections};
}}
http {{
    access_log off;
    tcp_nodelay on;
    nchan_shared_memory_size {shared_memory};
    server {{
        listen 127.0.0.1:{port};
        location ~ ^/pub/(.+)$ {{
            allow 127.0.0.1;
            deny all;
            nchan_publisher http;
            nchan_channel_id $1;
            nchan_message_buffer_length {buffer_length};
            nchan_message_timeout {buffer_ttl}s;
        }}
        location ~ ^/sub/(.+)$ {{
            nchan_subscriber eventsource websocket longpoll;
            nchan_channel_id $1;
            nchan_subscriber_first_message newest;
        }}
    }}
}}
"""


def raw_nchan_config(module: str, prefix: Path, port: int) -> str:
    options, settings = EdgeConfigOptions(), default_settings()
    return RAW_NCHAN_CONFIG.format(
        module=module,
        prefix=prefix,
        rlimit_nofile=2 * options.worker_connections + 1024,
        worker_connections=options.worker_connections,
        shared_memory=options.shared_memory,
        port=port,
        buffer_length=settings.channel_buffer_length,
        buffer_ttl=max(1, round(settings.channel_buffer_ttl)),
    )


class RawNchan(Scenario):
    name = "raw-nchan"
    description = "nginx + Nchan alone: the bench publishes to /pub/ and subscribes, no threadcast (the ceiling)"

    def unavailable(self, config: BenchConfig) -> str | None:
        return nchan_unavailable(config)

    @contextmanager
    def running(self, config: BenchConfig, workdir: Path) -> Iterator[Target]:
        port = free_port()
        text = raw_nchan_config(config.nchan_module or DEBIAN_NCHAN_MODULE, (workdir / "nginx").resolve(), port)
        with private_nginx(config, workdir, port, text) as nginx:
            edge = Endpoint("127.0.0.1", port)
            yield Target(
                edge=edge,
                poster=edge,
                raw_nchan=True,
                thread_ids=list(range(1, config.threads + 1)),
                server_pids=nginx.pids,
                edge_pids=nginx.pids,
            )


SCENARIOS: dict[str, Scenario] = {s.name: s for s in (Embedded(), Brokers(), Nchan(), RawNchan())}
