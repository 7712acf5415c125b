"""Finding services by module or file name, for `threadcast run`."""

from __future__ import annotations

from pathlib import Path

import pytest

from threadcast.toolkit import ServiceNotFound, load_service

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "webhook_notifier.py"


def test_a_file_with_one_service_needs_no_attribute():
    assert load_service(str(EXAMPLE)).name == "webhooks"
    assert load_service(f"{EXAMPLE}:svc").name == "webhooks"


def test_a_module_and_attribute(tmp_path, monkeypatch):
    (tmp_path / "two_services.py").write_text(
        "from threadcast.toolkit import Service\nfirst = Service('first')\nsecond = Service('second')\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    assert load_service("two_services:second").name == "second"
    with pytest.raises(ServiceNotFound, match="defines 2 services"):
        load_service("two_services")


@pytest.mark.parametrize(
    ("spec", "problem"),
    [
        ("no_such_module_anywhere", "cannot import"),
        ("missing/file.py", "no such file"),
        (f"{EXAMPLE}:nothing", "no Service named 'nothing'"),
    ],
)
def test_what_cannot_be_found_says_why(spec, problem):
    with pytest.raises(ServiceNotFound, match=problem):
        load_service(spec)
