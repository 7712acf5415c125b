"""Finding a service by name: `package.module:attribute`, `path/to/file.py[:attribute]`."""

from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path
from types import ModuleType

from threadcast.toolkit.service import Service


class ServiceNotFound(LookupError):
    pass


def load_service(spec: str) -> Service:
    """The Service named by `spec`: `module:attr` or `file.py:attr`; without `:attr`, the one
    Service the module defines at top level."""
    target, _, attribute = spec.partition(":")
    module = load_module(Path(target)) if target.endswith(".py") else _import(target)
    if attribute:
        service = getattr(module, attribute, None)
        if not isinstance(service, Service):
            raise ServiceNotFound(f"{target} has no Service named {attribute!r}")
        return service
    found = [value for value in vars(module).values() if isinstance(value, Service)]
    if len(found) != 1:
        names = ", ".join(sorted(s.name for s in found)) or "none"
        raise ServiceNotFound(f"{target} defines {len(found)} services ({names}); name one as {target}:ATTRIBUTE")
    return found[0]


def _import(name: str) -> ModuleType:
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        raise ServiceNotFound(f"cannot import {name!r}: {exc}") from exc


def load_module(path: Path) -> ModuleType:
    """Import a Python file that is not on the import path (as `threadcast_service_<stem>`)."""
    if not path.is_file():
        raise ServiceNotFound(f"no such file: {path}")
    name = f"threadcast_service_{path.stem}"
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses and msgspec look their module up while it runs
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module
