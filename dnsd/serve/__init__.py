"""Serving: the sans-IO engine, the UDP and TCP listeners, and the process runtime."""
