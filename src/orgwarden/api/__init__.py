"""The HTTP surface: the app factory (the one place things are wired), Admin API routes, error rendering."""
