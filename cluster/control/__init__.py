"""The head: the coordinator and its parts, in sub-rooms by what they do, bottom to top.

- ``rules/``: pure decisions (an encode's outcome, a dispatch round, quarantine, the
  watchdog, what a job graph's tasks mean for their job); the clock is passed in.
- ``records/``: what is kept (the job table, the one writer of a job; SQLite; the
  webhook outbox; counters).
- ``farm/``: what is known of the farm (nodes, where media are seen, probes, health).
- ``running/``: work in flight (warm encoders, encodes, work orders).
- ``graphs/``: the kinds of multi-task jobs, pure (split-and-stitch).
- here: the coordinator, which applies what the rules decide; the graph engine that runs
  any kind; the declared API; admission; fakes for tests.

Plain asyncio; Ray is applied in ``ray_edge``."""
