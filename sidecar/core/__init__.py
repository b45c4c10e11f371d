"""Pure policies: stdlib only, no I/O, no clock reads. Callers pass snapshots and `now`; functions return decisions."""
