"""Deciding where work goes: the planner, the cost model, admission. Pure: no I/O, no Ray."""
