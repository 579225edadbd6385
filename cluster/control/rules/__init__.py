"""Pure rules of the head: what happens to a job when its encode ends (``policy``), one
dispatch round (``dispatch``), quarantine (``health``), the stall watchdog (``watchdog``)
and the job graph's decisions (``graph``). No loop, no clock (``now`` is passed in), no
files: each is tested with plain values."""
