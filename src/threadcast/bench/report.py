"""The terminal table and the ratios of each scenario to the raw Nchan ceiling."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

BASELINE = "raw-nchan"

Figure = Callable[[dict[str, Any]], float | None]

RATIO_FIGURES: dict[str, Figure] = {
    "deliveries_per_s": lambda s: s["deliveries"]["per_second"],
    "connections_per_s": lambda s: s["connect"]["per_second"],
    "latency_p50_from_sent": lambda s: (s["latency_from_sent_ms"] or {}).get("p50"),
    "latency_p99_from_sent": lambda s: (s["latency_from_sent_ms"] or {}).get("p99"),
    "rss_kb_per_connection": lambda s: s["server"]["rss_kb_per_connection"],
}
"""Ratio figures: scenario / ceiling. Above 1 is better for rates, worse for latency and memory.
Latency ratios use the time from the POST being sent: raw Nchan answers its publisher only after
the fan-out, so its latency from the response (the table's) is about 0, no base for a ratio."""


def ratio(value: float | None, base: float | None) -> float | None:
    if value is None or not base or base <= 0:
        return None
    return round(value / base, 2)


def add_ratios(scenarios: list[dict[str, Any]]) -> None:
    """Give every measured scenario `vs_raw_nchan` when the ceiling was measured too."""
    base = next((s for s in scenarios if s["name"] == BASELINE and s["status"] == "ok"), None)
    if base is None:
        return
    for scenario in scenarios:
        if scenario["status"] == "ok" and scenario is not base:
            scenario["vs_raw_nchan"] = {name: ratio(get(scenario), get(base)) for name, get in RATIO_FIGURES.items()}


def _number(value: float | None, digits: int = 0) -> str:
    if value is None:
        return "-"
    return f"{value:,.{digits}f}"


def _ms(latency: dict[str, float] | None, key: str) -> str:
    return _number(latency[key], 1) if latency else "-"


COLUMNS: list[tuple[str, Callable[[dict[str, Any]], str]]] = [
    ("subs", lambda s: _number(s["subscribers"]["connected"])),
    ("conn/s", lambda s: _number(s["connect"]["per_second"])),
    ("posts/s", lambda s: _number(s["posts"]["per_second"], 1)),
    ("msgs/s", lambda s: _number(s["deliveries"]["per_second"])),
    ("p50 ms", lambda s: _ms(s["latency_ms"], "p50")),
    ("p90 ms", lambda s: _ms(s["latency_ms"], "p90")),
    ("p99 ms", lambda s: _ms(s["latency_ms"], "p99")),
    ("max ms", lambda s: _ms(s["latency_ms"], "max")),
    ("lost", lambda s: _number(s["deliveries"]["lost"])),
    ("dup", lambda s: _number(s["deliveries"]["duplicates"])),
    ("errors", lambda s: _number(s["errors_total"])),
    ("KB/conn", lambda s: _number(s["server"]["rss_kb_per_connection"], 1)),
    ("server CPU", lambda s: f"{_number(s['server']['cpu_percent'])}%"),
    (
        "client CPU conn/post",
        lambda s: (
            f"{_number(s['connect']['busiest_client_cpu_percent'])}%/{_number(s['client']['busiest_cpu_percent'])}%"
        ),
    ),
]


def _align(rows: list[list[str]]) -> list[str]:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return [
        "  ".join(cell.ljust(w) if i == 0 else cell.rjust(w) for i, (cell, w) in enumerate(zip(row, widths))).rstrip()
        for row in rows
    ]


def render_table(report: dict[str, Any]) -> str:
    """The figures of every scenario, then the ratios to raw Nchan; unavailable and failed
    scenarios are listed below with the reason."""
    scenarios = report["scenarios"]
    measured = [s for s in scenarios if s["status"] == "ok"]
    lines: list[str] = []
    if measured:
        lines += _align(
            [["scenario", *(title for title, _ in COLUMNS)]]
            + [[s["name"], *(cell(s) for _, cell in COLUMNS)] for s in measured]
        )
    with_ratios = [s for s in measured if "vs_raw_nchan" in s]
    if with_ratios:
        titles = ["vs raw-nchan", "msgs/s", "conn/s", "p50 from sent", "p99 from sent", "KB/conn"]
        rows = [
            [s["name"], *(f"{v:g}x" if v is not None else "-" for v in s["vs_raw_nchan"].values())] for s in with_ratios
        ]
        lines += ["", *_align([titles, *rows])]
    for s in scenarios:
        if s["status"] != "ok":
            lines.append(f"{s['name']}: {s['status']}: {s['reason'].splitlines()[0] if s['reason'] else ''}")
    config = report["config"]
    mix = ", ".join(f"{name} {share:.0%}" for name, share in config["mix"].items())
    lines += [
        "",
        f"{config['subscribers']:,} subscribers ({mix}) over {config['threads']} threads (Zipf {config['zipf']:g}), "
        f"{config['rate']} posts/s for {config['duration_s']:g} s; "
        "client CPU: busiest subscriber process while connecting / while posting, % of one core",
    ]
    return "\n".join(lines)
