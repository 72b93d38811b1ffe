"""The data plane: the /v1/messages pipeline, upstream clients, and the built-in simulator."""
