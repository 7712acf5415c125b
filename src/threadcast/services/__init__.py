"""The built-in services, each written with the service toolkit (`threadcast.toolkit`):

- `relay`: moves committed events from the database outbox to the event log, in order;
- `dispatcher`: reads the event log as group `realtime`, publishes one format job per event;
- `formatter`: renders each job into push messages and publishes them on every channel the
  event concerns, with the reusable stage `edge_publisher.publish_to_edge`;
- `janitor`: expires old dead letters of those services' queues and reports how many remain
  (a singleton duty, like the relay).

`threadcast up` runs them beside the API; `threadcast run <name>` runs any of them alone.
"""

from __future__ import annotations

from threadcast.config import SERVICES
from threadcast.toolkit import Service, load_service

BUILTIN = {name: f"threadcast.services.{name}:service" for name in SERVICES}
"""Built-in service name -> where it is defined."""


def find_service(spec: str) -> Service:
    """A built-in service by name, else the service `spec` names: `package.module:attribute`
    or `path/to/file.py[:attribute]` (raises `ServiceNotFound`)."""
    return load_service(BUILTIN.get(spec, spec))


def builtin_services(names: tuple[str, ...] = SERVICES) -> list[Service]:
    """The named built-in services (all of them by default), in pipeline order."""
    return [load_service(BUILTIN[name]) for name in names]
