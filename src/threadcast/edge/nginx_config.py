"""The nginx + Nchan configuration that fronts threadcast: `threadcast edge config` renders it.

One nginx holds the browser connections (`/sub/<channels>`: EventSource, WebSocket, long-poll),
takes the formatter's publishes (`/pub/<channel>`, internal networks only), and proxies the rest
(`/api/`, `/static/`, the demo page, `/healthz`, `/readyz`) to the threadcast API.
`render_nginx_config` is a pure function of its options and the threadcast settings; docs/edge.md
explains every directive.

Two subrequests go from nginx to the API before a subscriber is attached:

- `nchan_authorize_request` on subscriptions that name a private channel (`user:{id}`): the API
  checks the signed token (`GET /api/v1/edge/authorize`).
- `auth_request` on subscriptions that ask to resume (a `Last-Event-ID` header, a `last_event_id`
  argument, or Nchan's `If-Modified-Since` / `If-None-Match` long-poll headers): the API answers
  with the id to resume from only when the buffers the resume reaches on this edge hold messages
  (`GET /api/v1/edge/resume`). Nchan 1.3.6 can abort a worker when it resumes on an empty buffer
  (the state after a restart); Nchan reads the resume id only from that answer.
"""

from __future__ import annotations

import ipaddress
import math
import re
from dataclasses import dataclass
from pathlib import Path

from threadcast.config import Settings
from threadcast.edge.http_publisher import edge_base_url

DEBIAN_NCHAN_MODULE = "/usr/lib/nginx/modules/ngx_nchan_module.so"
"""Where Debian's `libnginx-mod-nchan` installs the module."""

AUTHORIZE_PATH = "/api/v1/edge/authorize"
RESUME_PATH = "/api/v1/edge/resume"
RESUME_ID_HEADER = "X-Threadcast-Resume-Id"
"""The guard's answer: the id Nchan resumes from (absent: subscribe fresh)."""
EDGE_HEADER = "X-Threadcast-Edge"
"""Set by nginx on the guard subrequest: this edge's publisher URL, as the API knows it."""
CHANNELS_HEADER = "X-Threadcast-Channels"
"""Set by nginx on both subrequests: the channels exactly as Nchan reads them (decoded path)."""
CHANNEL_CHARS = "A-Za-z0-9_:.-"
"""What a channel id may hold (as the embedded edge); other subscribe paths get 404."""
GUARD_REFUSAL_STATUS = 401
"""The guard's refusal of a resume nginx cannot drop (`If-Modified-Since` / `If-None-Match`)..."""
RESUME_REFUSED_STATUS = 409
"""...which the subscriber gets as this status."""
STUB_STATUS_PATH = "/nchan_stub_status"

_LOOPBACK = ("127.0.0.1", "::1")
_UNSAFE_CHARS = re.compile(r'[\s";{}\\$#\'\x00-\x1f]')


@dataclass(frozen=True)
class Address:
    """`host:port` (IPv6 hosts in brackets)."""

    host: str
    port: int

    @classmethod
    def parse(cls, text: str) -> Address:
        match = re.fullmatch(r"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.*_-]+):(\d{1,5})", text.strip())
        if match is None:
            raise ValueError(f"{text!r} is not host:port")
        port = int(match.group(2))
        if not 0 < port < 65536:
            raise ValueError(f"port {port} of {text!r} is out of range")
        return cls(match.group(1), port)

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"

    def reachable(self) -> Address:
        """The address to connect to: a wildcard listen address is reached on loopback."""
        if self.host in ("*", "0.0.0.0"):
            return Address("127.0.0.1", self.port)
        if self.host == "[::]":
            return Address("[::1]", self.port)
        return self


@dataclass(frozen=True)
class EdgeConfigOptions:
    """Where this nginx listens, where the API is, and where nginx keeps its files."""

    listen: Address = Address("127.0.0.1", 8080)
    api: Address = Address("127.0.0.1", 8000)
    prefix: Path = Path(".run/nginx")
    allow: tuple[str, ...] = ()
    """Networks (CIDR) besides loopback that may publish and read the stub status."""
    module: str = DEBIAN_NCHAN_MODULE
    edge_url: str = ""
    """How publishers (and the API's resume guard) reach this edge; default `http://<listen>`."""
    worker_connections: int = 20000
    shared_memory: str = "128M"

    def __post_init__(self) -> None:
        for network in self.allow:
            try:
                ipaddress.ip_network(network, strict=True)
            except ValueError as exc:
                raise ValueError(f"--allow {network!r}: {exc}") from None
        if self.worker_connections < 64:
            raise ValueError("worker_connections must be at least 64")
        if not re.fullmatch(r"\d+[KkMm]?", self.shared_memory):
            raise ValueError(f"shared memory size {self.shared_memory!r} is not like 128M")
        _safe(str(self.prefix), "prefix")
        _safe(self.module, "module path")
        if self.edge_url and not re.fullmatch(r"(nchan\+)?https?://[^/\s]+/?", self.edge_url):
            raise ValueError(f"edge url {self.edge_url!r} is not like nchan+http://host:port")
        _safe(self.resolved_edge_url(), "edge url")

    def resolved_edge_url(self) -> str:
        return edge_base_url(self.edge_url) if self.edge_url else f"http://{self.listen.reachable()}"


def nchan_edges(edge_url: str) -> list[str]:
    """The base URLs of the Nchan edges in `THREADCAST_EDGE_URL` (comma-separated)."""
    return [edge_base_url(url) for url in edge_url.split(",") if url.strip().startswith("nchan+")]


def _safe(value: str, what: str) -> None:
    """A value written into the configuration: no characters that could end or extend a directive."""
    if not value or _UNSAFE_CHARS.search(value):
        raise ValueError(f"{what} {value!r} is empty or has a character nginx would misread")


def _seconds(value: float) -> str:
    """nginx second-granularity directives take whole seconds; never round down to 0."""
    return f"{max(1, math.ceil(value))}s"


def body_limit(settings: Settings) -> int:
    """Largest request body nginx accepts on `/pub/` and `/api/`: generous, so the API (not
    nginx) answers oversized posts with its own 413, and a formatted message (JSON envelope,
    escaping) always fits the publisher's in-memory body buffer."""
    return 4 * settings.max_message_bytes + 64 * 1024


def render_nginx_config(options: EdgeConfigOptions, settings: Settings) -> str:
    """The complete nginx configuration (for `nginx -p PREFIX -c FILE`)."""
    prefix = options.prefix
    heartbeat = _seconds(settings.heartbeat_interval)
    return _TEMPLATE.format(
        module=options.module,
        pid=prefix / "nginx.pid",
        error_log=prefix / "error.log",
        temp=prefix,
        worker_connections=options.worker_connections,
        rlimit_nofile=2 * options.worker_connections + 1024,
        shared_memory=options.shared_memory,
        api=options.api,
        listen=options.listen,
        allow="\n".join(f"            allow {net};" for net in (*_LOOPBACK, *options.allow)),
        body=body_limit(settings),
        buffer_length=settings.channel_buffer_length,
        buffer_ttl=_seconds(settings.channel_buffer_ttl),
        subscriber=_SUBSCRIBER.format(
            heartbeat=heartbeat, resume_var=_header_var(RESUME_ID_HEADER), refusal=GUARD_REFUSAL_STATUS
        ),
        chars=CHANNEL_CHARS,
        authorize_path=AUTHORIZE_PATH,
        resume_path=RESUME_PATH,
        subrequest=_SUBREQUEST.format(channels_header=CHANNELS_HEADER),
        edge_header=EDGE_HEADER,
        edge_url=options.resolved_edge_url(),
        refusal=GUARD_REFUSAL_STATUS,
        refused=RESUME_REFUSED_STATUS,
        stub_status=STUB_STATUS_PATH,
    )


def _header_var(header: str) -> str:
    return "$upstream_http_" + header.lower().replace("-", "_")


_SUBSCRIBER = """set $threadcast_channels $1;
            nchan_subscriber eventsource websocket longpoll;
            nchan_channel_id $1;
            nchan_channel_id_split_delimiter ",";
            nchan_subscriber_first_message newest;
            auth_request /_threadcast/resume;
            auth_request_set $threadcast_resume_id {resume_var};
            nchan_subscriber_last_message_id $threadcast_resume_id;
            error_page {refusal} = @threadcast_resume_refused;
            nchan_access_control_allow_origin *;
            nchan_eventsource_ping_interval {heartbeat};
            nchan_eventsource_ping_event "";
            nchan_eventsource_ping_comment " ping";
            nchan_websocket_ping_interval {heartbeat};"""

_SUBREQUEST = """internal;
            proxy_pass_request_body off;
            proxy_set_header Content-Length "";
            proxy_set_header X-Original-URI $request_uri;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_set_header {channels_header} $threadcast_channels;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_connect_timeout 2s;
            proxy_read_timeout 5s;"""

_TEMPLATE = """\
# nginx + Nchan in front of threadcast, written by `threadcast edge config`.
# Run it with: nginx -p <prefix> -c <this file>. docs/edge.md explains every directive.

load_module "{module}";

pid "{pid}";
error_log "{error_log}" warn;
worker_processes auto;
worker_rlimit_nofile {rlimit_nofile};

events {{
    worker_connections {worker_connections};
}}

http {{
    access_log off;
    server_tokens off;
    default_type application/octet-stream;
    tcp_nodelay on;
    keepalive_timeout 65s;

    client_body_temp_path "{temp}/client_body_temp";
    proxy_temp_path "{temp}/proxy_temp";
    fastcgi_temp_path "{temp}/fastcgi_temp";
    uwsgi_temp_path "{temp}/uwsgi_temp";
    scgi_temp_path "{temp}/scgi_temp";

    nchan_shared_memory_size {shared_memory};

    upstream threadcast_api {{
        server {api};
        keepalive 64;
    }}

    # Does a subscriber ask to resume? Only then does the resume guard ask the API.
    map $request_uri $threadcast_resume_arg {{
        "~[?&]last_event_id=[^&]" 1;
        default "";
    }}
    map "$http_last_event_id$http_if_modified_since$http_if_none_match$threadcast_resume_arg" $threadcast_resume_asked {{
        "" 0;
        default 1;
    }}
    map "$http_if_modified_since$http_if_none_match" $threadcast_resume_conditional {{
        "" 0;
        default 1;
    }}

    server {{
        listen {listen};
        server_name _;

        # Publishing: the formatter POSTs each message here, from an allowed network only.
        location ~ ^/pub/(.+)$ {{
{allow}
            deny all;
            nchan_publisher http;
            nchan_channel_id $1;
            nchan_message_buffer_length {buffer_length};
            nchan_message_timeout {buffer_ttl};
            client_max_body_size {body};
            client_body_buffer_size {body};
        }}

        # Subscribing, to comma-separated channels; a private one (user:<id>) needs a token.
        location ~ ^/sub/((?:[{chars}]*,)*user:[,{chars}]*)$ {{
            nchan_authorize_request /_threadcast/authorize;
            {subscriber}
        }}

        location ~ ^/sub/([,{chars}]+)$ {{
            {subscriber}
        }}

        location = /_threadcast/authorize {{
            {subrequest}
            proxy_pass http://threadcast_api{authorize_path};
        }}

        # The resume guard: Nchan resumes only from the id the API hands back.
        location = /_threadcast/resume {{
            {subrequest}
            if ($threadcast_resume_asked = 0) {{
                return 204;
            }}
            proxy_set_header {edge_header} "{edge_url}";
            proxy_pass http://threadcast_api{resume_path};
            error_page 500 502 503 504 = @threadcast_resume_unavailable;
        }}

        # The API cannot be asked: subscribe fresh, or refuse a resume nginx cannot drop.
        location @threadcast_resume_unavailable {{
            if ($threadcast_resume_conditional) {{
                return {refusal};
            }}
            return 204;
        }}

        location @threadcast_resume_refused {{
            default_type text/plain;
            return {refused} "resume point not available on this edge: subscribe again without If-Modified-Since and If-None-Match, and fetch missed posts from the API\\n";
        }}

        location = {stub_status} {{
{allow}
            deny all;
            nchan_stub_status;
        }}

        # The API's edge endpoints answer nginx's subrequests only.
        location ^~ /api/v1/edge/ {{
            return 404;
        }}

        # Everything else the browser needs comes from the API.
        location ~ ^/(?:api/|static/|stats$|healthz$|readyz$|$) {{
            proxy_pass http://threadcast_api;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $host;
            proxy_set_header X-Real-IP $remote_addr;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto $scheme;
            client_max_body_size {body};
        }}

        location / {{
            return 404;
        }}
    }}
}}
"""
