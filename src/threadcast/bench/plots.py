"""PNG plots of a bench run, drawn from its results alone: the latency CDF of each scenario and
throughput over time (messages delivered/s and posts accepted/s)."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only, no display

import matplotlib.pyplot as plt  # noqa: E402  (after choosing the backend)
import numpy as np  # noqa: E402

LINEAR_BELOW_MS = 1.0
"""The latency axis is logarithmic above this and linear below (down to the negative values of
deliveries that beat the POST's response)."""
LINE_STYLES = ("-", "--", ":", "-.")
PANELS = (
    ("latency_cdf_ms", "latency_ms", "from POST accepted (response received)"),
    ("latency_from_sent_cdf_ms", "latency_from_sent_ms", "from POST sent"),
)


def _subtitle(report: dict[str, Any]) -> str:
    c = report["config"]
    return (
        f"{c['subscribers']:,} subscribers over {c['threads']} threads, {c['rate']} posts/s for {c['duration_s']:g} s "
        f"on {report['machine']['nproc']} cores"
    )


def latency_cdf(report: dict[str, Any], path: Path) -> None:
    fig, axes = plt.subplots(1, 2, figsize=(13, 5.5), sharey=True)
    for ax, (points_key, summary_key, title) in zip(axes, PANELS):
        for scenario in report["scenarios"]:
            points = scenario.get(points_key) or []
            if scenario["status"] != "ok" or not points:
                continue
            latency = scenario[summary_key]
            ax.plot(
                points,
                np.linspace(0, 100, len(points)),
                linewidth=2,
                label=f"{scenario['name']}  (p50 {latency['p50']:.1f}, p99 {latency['p99']:.1f} ms)",
            )
        ax.set_xscale("symlog", linthresh=LINEAR_BELOW_MS)
        ax.set_xlabel(f"latency {title}, ms (log scale above {LINEAR_BELOW_MS:g} ms)")
        ax.set_title(title)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(loc="lower right", fontsize=9)
    axes[0].set_ylabel("deliveries at or below (%)")
    axes[0].set_ylim(0, 100)
    fig.suptitle(f"End-to-end latency to every subscriber\n{_subtitle(report)}", fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def throughput(report: dict[str, Any], path: Path) -> None:
    """Dashed and dotted lines keep scenarios apart where they coincide (a fixed post rate that
    every scenario keeps up with gives them the same curves)."""
    fig, (delivered, accepted) = plt.subplots(2, 1, sharex=True, figsize=(9, 6.5))
    measured = [s for s in report["scenarios"] if s["status"] == "ok"]
    for scenario, style in zip(measured, itertools.cycle(LINE_STYLES)):
        timeline = scenario["timeline"]
        for ax, key in ((delivered, "delivered_per_s"), (accepted, "accepted_per_s")):
            series = timeline[key]
            ax.plot(
                (np.arange(len(series)) + 0.5) * timeline["bucket_s"],
                series,
                label=scenario["name"],
                linewidth=2,
                linestyle=style,
                alpha=0.85,
            )
    for ax in (delivered, accepted):
        ax.axvline(report["config"]["duration_s"], color="grey", linestyle="--", linewidth=1)
        ax.grid(True, alpha=0.3)
        ax.set_ylim(bottom=0)
    delivered.set_ylabel("messages delivered / s")
    accepted.set_ylabel("posts accepted / s")
    accepted.set_xlabel("seconds since the first post (dashed: last post due)")
    delivered.legend(loc="upper right")
    delivered.set_title(f"Throughput over time\n{_subtitle(report)}", fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_plots(report: dict[str, Any], folder: Path) -> list[Path]:
    """`latency-cdf.png` and `throughput.png` in `folder` (none when nothing was measured)."""
    if not any(s["status"] == "ok" for s in report["scenarios"]):
        return []
    paths = [folder / "latency-cdf.png", folder / "throughput.png"]
    latency_cdf(report, paths[0])
    throughput(report, paths[1])
    return paths
