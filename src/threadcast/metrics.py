"""Prometheus metrics of the built-in services, served at /metrics."""

from prometheus_client import Counter, Gauge, Histogram

POSTS_CREATED = Counter("threadcast_posts_created_total", "Posts saved through the API")
VOTES_CHANGED = Counter("threadcast_votes_changed_total", "Votes cast, turned or taken back through the API")
EVENTS_RELAYED = Counter("threadcast_events_relayed_total", "Outbox events appended to the event log")
JOBS_DISPATCHED = Counter("threadcast_jobs_dispatched_total", "Format jobs published from the log")
DEAD_LETTERS = Gauge(
    "threadcast_dead_letters_held", "Dead letters a queue holds, as the janitor last saw them", ["queue"]
)
DEAD_LETTERS_EXPIRED = Counter(
    "threadcast_dead_letters_expired_total", "Dead letters the janitor deleted for age", ["queue"]
)
JOBS_FORMATTED = Counter("threadcast_jobs_formatted_total", "Format jobs published to the edge and acked")
PUBLISH_LATENCY = Histogram(
    "threadcast_event_to_publish_seconds",
    "From the event's creation to its publication on the edge",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
