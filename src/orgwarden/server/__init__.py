"""orgwarden's own HTTP/1.1 server, on httptools' public parser API.

``protocol`` parses each connection and enforces the limits and time-outs; ``direct`` answers
data-plane requests straight from the connection (no ASGI); ``asgi`` runs every other request
through an ASGI 3 app; ``lifespan`` runs the app's start-up and shut-down; ``run`` listens,
handles signals, stops gracefully within a deadline and supervises worker processes; ``proxy``
decides whose ``X-Forwarded-For`` is believed; ``wire`` holds the bytes every answer shares.
"""
