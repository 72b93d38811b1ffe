"""Seeing what happens: logging set-up (text or JSON), the data-plane access log, Prometheus metrics."""
