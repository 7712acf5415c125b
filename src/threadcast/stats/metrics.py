"""Prometheus metrics of the stats topology (served with the toolkit's /metrics)."""

from prometheus_client import Counter, Gauge

EMITTED = Counter("threadcast_stats_records_total", "Log records the stats spout emitted (replays included)")
DONE = Counter("threadcast_stats_records_done_total", "Spout tuples whose whole tree was acked")
REPLAYED = Counter(
    "threadcast_stats_replayed_total", "Spout tuples failed downstream or timed out, to be emitted again"
)
TIMED_OUT = Counter("threadcast_stats_timeouts_total", "Spout tuples not done within the message timeout")
PENDING = Gauge("threadcast_stats_pending", "Spout tuples in flight (emitted, not done)")
BOLT_ERRORS = Counter("threadcast_stats_bolt_errors_total", "Exceptions raised by bolts", ["component"])
DROPPED = Counter(
    "threadcast_stats_dropped_total",
    "Records not counted: undecodable, unknown (event type), too_late (beyond the lateness, or for "
    "a window already written)",
    ["reason"],
)
LATE = Counter("threadcast_stats_late_events_total", "Events counted in a window that had already ended")
DUPLICATES = Counter("threadcast_stats_duplicates_total", "Events seen again in their window (same event id)")
WINDOWS_WRITTEN = Counter("threadcast_stats_windows_written_total", "Forum windows written to the object store")
WRITE_ERRORS = Counter("threadcast_stats_write_errors_total", "Failed attempts to write a window (retried)")
PUBLISH_ERRORS = Counter("threadcast_stats_publish_errors_total", "Closed windows the edge did not accept")
WATERMARK = Gauge("threadcast_stats_watermark_seconds", "Event-time watermark of a window task", ["task"])
