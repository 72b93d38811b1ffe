"""Claude Code telemetry: the OTLP/HTTP receiver (``/v1/metrics``, ``/v1/logs``) and its decoding.

A package of its own rather than part of ``gateway``: it shares the gateway's key cache and error
envelope, but writes what it receives to the database per export instead of relaying anything.
"""
