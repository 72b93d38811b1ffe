"""The web console at ``/console``: server-rendered pages (Jinja2) over the same services and
permission policy as the Admin API, signed in with the browser session of ``/auth/login``.

``app.router`` is what ``api/app.py`` mounts; ``pages.ConsolePages`` registers each page with its
permission; ``render`` draws them with the security headers every console answer carries.
"""
