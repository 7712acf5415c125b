"""Prometheus metrics of the built-in services, served at /metrics."""

from prometheus_client import Counter, Histogram

POSTS_CREATED = Counter("threadcast_posts_created_total", "Posts saved through the API")
EVENTS_RELAYED = Counter("threadcast_events_relayed_total", "Outbox events appended to the event log")
JOBS_DISPATCHED = Counter("threadcast_jobs_dispatched_total", "Format jobs published from the log")
JOBS_FORMATTED = Counter("threadcast_jobs_formatted_total", "Format jobs published to the edge and acked")
PUBLISH_LATENCY = Histogram(
    "threadcast_event_to_publish_seconds",
    "From the event's creation to its publication on the edge",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
