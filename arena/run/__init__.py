"""Executors (Ray by default, in-process for debugging and single-device checks) and the driver."""
