"""The push edges a process publishing over HTTP sends to, chosen in this order:

1. the live configuration's `edges`, when set: the way to list nginx + Nchan edges, which are
   not Python processes and do not register themselves;
2. else the live members of role `edge`: every `threadcast up` whose edge is embedded registers
   one, with the URL it takes publishes on;
3. else the edges the publisher was made with (the `edge_url` setting, or the API process on
   this machine when the edge is embedded).

An embedded edge takes publishes from loopback addresses only, so it registers a loopback URL
when it listens on every interface; such a URL means something on the member's own host only,
and members of other hosts that give one are left out.
"""

from __future__ import annotations

import socket
from urllib.parse import urlsplit

import structlog

from threadcast.coord import LiveConfig, Member
from threadcast.edge.app import is_loopback
from threadcast.edge.http_publisher import HttpEdgePublisher, edge_base_url

log = structlog.get_logger("threadcast.edge")

EDGE_ROLE = "edge"
"""The role an embedded edge registers as."""


def _loopback_url(url: str) -> bool:
    host = urlsplit(edge_base_url(url)).hostname or ""
    return host == "localhost" or is_loopback(host)


def member_edges(members: list[Member], this_host: str | None = None) -> list[str]:
    """The publish URLs of `edge` members that this host can use, in registration order."""
    this_host = socket.gethostname() if this_host is None else this_host
    urls = [
        member.info.url
        for member in members
        if member.info.url and (member.info.host == this_host or not _loopback_url(member.info.url))
    ]
    return list(dict.fromkeys(edge_base_url(url) for url in urls))


class EdgeTargets:
    """Keeps `publisher` on the edges of the precedence above; feed it the live configuration
    (`follow_live`) and the `edge` members (`follow_members`). Logs the edge set at first and
    at every change, with where it came from."""

    def __init__(self, publisher: HttpEdgePublisher, fallback: list[str], this_host: str | None = None) -> None:
        self.publisher = publisher
        self.fallback = [edge_base_url(url) for url in fallback]
        self._this_host = this_host
        self._live: list[str] = []
        self._members: list[str] = []
        self._announced: list[str] | None = None

    def follow_live(self, config: LiveConfig) -> None:
        self._live = [edge_base_url(url) for url in config.edges]
        self._apply()

    def follow_members(self, members: list[Member]) -> None:
        self._members = member_edges(members, self._this_host)
        self._apply()

    def chosen(self) -> tuple[str, list[str]]:
        """(where the edges come from, their base URLs)."""
        if self._live:
            return "live configuration", self._live
        if self._members:
            return "edge members", self._members
        return "settings", self.fallback

    def _apply(self) -> None:
        source, urls = self.chosen()
        if urls != self.publisher.urls:
            self.publisher.set_urls(urls)
        if urls != self._announced:
            log.info("publishing to edges", source=source, edges=urls)
            self._announced = list(urls)
