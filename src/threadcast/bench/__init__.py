"""`threadcast bench`: the figures that say how fast threadcast is (docs/benchmarks.md).

Each scenario starts its servers, then separate client processes open S subscriptions
(EventSource, WebSocket and long-poll) spread over T threads with Zipf popularity, a poster
process sends P posts/s for D seconds, and every receipt is matched to its post by the post id.

- `config`: the options and their checks; `workload`: who subscribes where, which thread a post
  goes to;
- `http1`, `protocols`: the lean HTTP/1.1 and EventSource/WebSocket readers the clients use;
- `subscribers`, `poster`: the client processes; `servers`, `scenarios`: what they measure;
- `analysis`: latency, loss, duplicates and rates from the raw records; `runner` drives it all;
  `report`, `plots`, `progress`: the table, the PNG files, the progress bar.
"""
