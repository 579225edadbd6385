"""The head: the coordinator and its parts (job table, outcome policy, cluster view,
prober, encoder pool, store, metrics). Plain asyncio; Ray is applied in ``ray_edge``."""
