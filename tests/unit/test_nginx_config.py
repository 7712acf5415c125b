"""`threadcast edge config`: the nginx + Nchan configuration, and the pure helpers of the edge
around it (resume guard's channel choice, stub status figures).

`nginx -t` runs on a rendered configuration whenever nginx is installed, and is required
(fails instead of skipping) when `THREADCAST_TEST_BACKENDS` names nchan, as `make test` does.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner

from tests.conftest import selected_real_backends
from threadcast.api.edge_auth import resumed_channels
from threadcast.cli import main
from threadcast.config import Settings
from threadcast.edge.nchan_status import metric_name, parse_stub_status
from threadcast.edge.nginx_config import Address, EdgeConfigOptions, nchan_edges, render_nginx_config


def render(tmp_path: Path, settings: Settings | None = None, **options: object) -> str:
    return render_nginx_config(EdgeConfigOptions(prefix=tmp_path, **options), settings or Settings())  # type: ignore[arg-type]


def location(config: str, pattern: str) -> str:
    """The body of the location whose header line contains `pattern`."""
    start = config.index(f"location {pattern}")
    return config[start : config.index("\n        }", start)]


def directives(block: str) -> list[str]:
    return [line.strip() for line in block.splitlines() if line.strip().endswith(";")]


def test_main_context_loads_nchan_and_keeps_every_file_under_the_prefix(tmp_path: Path):
    config = render(tmp_path, module="/opt/nchan/ngx_nchan_module.so", worker_connections=5000)
    assert config.splitlines()[3] == 'load_module "/opt/nchan/ngx_nchan_module.so";'
    assert f'pid "{tmp_path}/nginx.pid";' in config
    assert f'error_log "{tmp_path}/error.log" warn;' in config
    for temp in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"):
        assert f'{temp}_temp_path "{tmp_path}/{temp}_temp";' in config
    assert "worker_processes auto;" in config
    assert "worker_connections 5000;" in config
    assert "worker_rlimit_nofile 11024;" in config
    assert "/etc/nginx" not in config and "include" not in config


def test_publisher_location_takes_buffer_settings_and_admits_allowed_networks_only(tmp_path: Path):
    settings = Settings(channel_buffer_length=7, channel_buffer_ttl=90.5, max_message_bytes=1000)
    pub = directives(location(render(tmp_path, settings, allow=("10.1.0.0/16", "fd00::/8")), "~ ^/pub/"))
    assert pub == [
        "allow 127.0.0.1;",
        "allow ::1;",
        "allow 10.1.0.0/16;",
        "allow fd00::/8;",
        "deny all;",
        "nchan_publisher http;",
        "nchan_channel_id $1;",
        "nchan_message_buffer_length 7;",
        "nchan_message_timeout 91s;",
        f"client_max_body_size {4 * 1000 + 64 * 1024};",
        f"client_body_buffer_size {4 * 1000 + 64 * 1024};",
    ]


def test_subscriber_locations(tmp_path: Path):
    config = render(tmp_path, Settings(heartbeat_interval=0.2))
    private = location(config, "~ ^/sub/((?:")
    public = location(config, "~ ^/sub/([")
    assert "nchan_authorize_request /_threadcast/authorize;" in directives(private)
    assert "nchan_authorize_request" not in public
    for block in (private, public):
        found = directives(block)
        for expected in (
            "nchan_subscriber eventsource websocket longpoll;",
            "nchan_channel_id $1;",
            'nchan_channel_id_split_delimiter ",";',
            "nchan_subscriber_first_message newest;",
            "nchan_access_control_allow_origin *;",
            "nchan_eventsource_ping_interval 1s;",
            "nchan_websocket_ping_interval 1s;",
            "auth_request /_threadcast/resume;",
            "auth_request_set $threadcast_resume_id $upstream_http_x_threadcast_resume_id;",
            "nchan_subscriber_last_message_id $threadcast_resume_id;",
        ):
            assert expected in found, expected


@pytest.mark.parametrize(
    ("path", "private"),
    [
        ("/sub/user:1", True),
        ("/sub/thread:1,user:2", True),
        ("/sub/thread:1,forum:demo,user:abc,post:3", True),
        ("/sub/thread:1", False),
        ("/sub/thread:1,forum:user", False),
        ("/sub/thread:user:1", False),
    ],
)
def test_private_channels_are_routed_to_the_authorizing_location(tmp_path: Path, path: str, private: bool):
    """nginx picks the first matching regex location, in order: the private one comes first."""
    config = render(tmp_path)
    regexes = re.findall(r"location ~ (\^/sub/\S+) \{", config)
    assert len(regexes) == 2
    matched = next(regex for regex in regexes if re.match(regex, path))
    assert (matched == regexes[0]) is private


def test_channel_ids_outside_the_embedded_edges_alphabet_are_not_subscribable(tmp_path: Path):
    regexes = re.findall(r"location ~ (\^/sub/\S+) \{", render(tmp_path))
    for path in ("/sub/thread:1/x", "/sub/thread 1", "/sub/user:1\nX-Injected: 1", "/sub/"):
        assert not any(re.match(regex, path) for regex in regexes), path


def test_internal_subrequests_carry_what_the_api_needs(tmp_path: Path):
    config = render(tmp_path, listen=Address.parse("0.0.0.0:80"))
    authorize = directives(location(config, "= /_threadcast/authorize"))
    resume = directives(location(config, "= /_threadcast/resume"))
    for block in (authorize, resume):
        assert "internal;" in block
        assert "proxy_set_header X-Original-URI $request_uri;" in block
        assert "proxy_set_header X-Threadcast-Channels $threadcast_channels;" in block
    assert "proxy_pass http://threadcast_api/api/v1/edge/authorize;" in authorize
    assert "proxy_pass http://threadcast_api/api/v1/edge/resume;" in resume
    assert 'proxy_set_header X-Threadcast-Edge "http://127.0.0.1:80";' in resume
    assert "return 409" in location(config, "@threadcast_resume_refused")
    assert "location ^~ /api/v1/edge/ {\n            return 404;" in config


def test_stub_status_is_loopback_only_and_the_api_is_proxied(tmp_path: Path):
    config = render(tmp_path, api=Address.parse("10.0.0.7:9000"), allow=("10.0.0.0/8",))
    assert directives(location(config, "= /nchan_stub_status")) == [
        "allow 127.0.0.1;",
        "allow ::1;",
        "allow 10.0.0.0/8;",
        "deny all;",
        "nchan_stub_status;",
    ]
    assert "server 10.0.0.7:9000;" in config
    proxy = directives(location(config, "~ ^/(?:api/|static/|stats$|healthz$|readyz$|$)"))
    assert "proxy_pass http://threadcast_api;" in proxy
    assert "proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;" in proxy
    assert 'proxy_set_header Connection "";' in proxy


@pytest.mark.parametrize(
    ("options", "problem"),
    [
        ({"allow": ("10.0.0.1/8",)}, "host bits"),
        ({"allow": ("everyone",)}, "does not appear to be"),
        ({"module": "/x;y"}, "module path"),
        ({"prefix": Path("/tmp/a b")}, "prefix"),
        ({"edge_url": "ftp://edge"}, "edge url"),
        ({"worker_connections": 10}, "worker_connections"),
    ],
)
def test_bad_options_are_refused(options: dict[str, object], problem: str):
    with pytest.raises(ValueError, match=problem):
        EdgeConfigOptions(**options)  # type: ignore[arg-type]


@pytest.mark.parametrize("text", ["8080", "host:", ":80", "127.0.0.1:0", "127.0.0.1:70000", "a b:80"])
def test_bad_addresses_are_refused(text: str):
    with pytest.raises(ValueError):
        Address.parse(text)


def test_nchan_edges_of_the_edge_url():
    assert nchan_edges("nchan+http://10.0.0.1:8080/, http://10.0.0.2:8000,nchan+http://[::1]:81") == [
        "http://10.0.0.1:8080",
        "http://[::1]:81",
    ]
    assert nchan_edges("embedded") == []


def nginx_binary() -> str:
    """nginx, which must be installed when nchan is selected (`make test` installs it)."""
    nginx = shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin")
    if nginx is None:
        if "nchan" in selected_real_backends():
            pytest.fail("nchan is selected but nginx is not installed (dev/services up nginx)")
        pytest.skip("nginx is not installed")
    return nginx


def test_nginx_accepts_the_rendered_configuration(tmp_path: Path):
    nginx = nginx_binary()
    conf = tmp_path / "nginx.conf"
    conf.write_text(render(tmp_path, listen=Address.parse("127.0.0.1:1"), allow=("192.168.0.0/16",)))
    result = subprocess.run([nginx, "-t", "-p", str(tmp_path), "-c", str(conf)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "test is successful" in result.stderr


def test_cli_writes_the_configuration(tmp_path: Path):
    out = tmp_path / "nginx.conf"
    result = CliRunner().invoke(
        main,
        [
            "edge", "config", "--listen", "127.0.0.1:9080", "--api", "127.0.0.1:9000", "--prefix", str(tmp_path),
            "--allow", "10.2.0.0/16", "--worker-connections", "1000", "--out", str(out),
        ],
        env={"THREADCAST_CHANNEL_BUFFER_LENGTH": "33"},
    )
    assert result.exit_code == 0, result.output
    written = out.read_text()
    assert "listen 127.0.0.1:9080;" in written and "server 127.0.0.1:9000;" in written
    assert "allow 10.2.0.0/16;" in written and "nchan_message_buffer_length 33;" in written
    assert "worker_connections 1000;" in written and f'pid "{tmp_path}/nginx.pid";' in written


def test_cli_prints_to_stdout_by_default():
    result = CliRunner().invoke(main, ["edge", "config"])
    assert result.exit_code == 0
    assert result.output.startswith("# nginx + Nchan in front of threadcast")


@pytest.mark.parametrize(
    "args",
    [
        ["--listen", "nowhere"],
        ["--api", "127.0.0.1:99999"],
        ["--allow", "10.0.0.1/8"],
        ["--module", "a;b"],
        ["--worker-connections", "10"],
        ["--bogus"],
    ],
)
def test_cli_bad_arguments_are_usage_errors(args: list[str]):
    result = CliRunner().invoke(main, ["edge", "config", *args])
    assert result.exit_code == 2, result.output


# -- the resume guard's choice of channels ------------------------------------------------------


@pytest.mark.parametrize(
    ("resume_ids", "reached"),
    [
        (["1795899764:0"], ["thread:1"]),  # one channel: it is resumed
        (["1795899764:[0],-"], ["thread:1"]),  # the quiet second channel is not
        (["1795899764:-,[3]"], ["user:2"]),
        (["1795899764:2,[3]"], ["thread:1", "user:2"]),
        (["[0],-"], ["thread:1"]),  # If-None-Match of a long-poll: the tags alone
        ([""], ["thread:1", "user:2"]),  # If-Modified-Since without If-None-Match
        (["1795899764:5"], ["thread:1", "user:2"]),  # tags do not match the channels: all
        (["1795899764:-,-"], ["thread:1", "user:2"]),
        (["1795899764:[0],-", "-,[1]"], ["thread:1", "user:2"]),
    ],
)
def test_resumed_channels(resume_ids: list[str], reached: list[str]):
    channels = ["thread:1"] if resume_ids == ["1795899764:0"] else ["thread:1", "user:2"]
    assert resumed_channels(channels, resume_ids) == reached


# -- stub status figures ------------------------------------------------------------------------

STUB_STATUS = """\
total published messages: 12
stored messages: 9
shared memory used: 16K
shared memory limit: 131072K
channels: 3
subscribers: 41
redis pending commands: 0
total interprocess send delay: 0.5
nchan version: 1.3.6
"""


def test_parse_stub_status():
    assert parse_stub_status(STUB_STATUS) == {
        "total published messages": 12,
        "stored messages": 9,
        "shared memory used": 16 * 1024,
        "shared memory limit": 131072 * 1024,
        "channels": 3,
        "subscribers": 41,
        "redis pending commands": 0,
        "total interprocess send delay": 0.5,
    }


def test_metric_names():
    assert metric_name("total published messages") == "threadcast_nchan_published_messages"
    assert metric_name("shared memory used") == "threadcast_nchan_shared_memory_used_bytes"
    assert metric_name("redis pending commands") == "threadcast_nchan_redis_pending_commands"
