"""Telemetry: a sink every layer writes to; it imports no other layer (only config, errors, messages, log).

- ``timing``: the per-request ``Trace`` the API creates and finishes, and the pipeline and pool mark through
  a context variable: decision, cache, queue wait, first token, usage, status → one ``RequestRecord``.
- ``records``: ``RequestRecord`` and the JSON summary over a window (percentiles, rates, shares).
- ``metrics``: one Prometheus registry per gateway, fed by the same records.
- ``store`` / ``writer``: SQLite or PostgreSQL persistence, written in batches off the request path.
- ``health``: checks with timeouts → ``ok`` / ``degraded`` / ``down``.
- ``live``: fan-out of finished records to the dashboard's SSE stream.
- ``service``: ``Telemetry``, the one object the rest of the gateway holds.
"""
