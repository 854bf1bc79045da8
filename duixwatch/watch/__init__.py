"""Watching the fleet: one poll of an APP, the schedule of every APP, the latest snapshots
and the state database."""
