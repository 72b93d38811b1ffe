"""Signing people in: the OpenID Connect relying party (``oidc``) and the groups hook (``groups``)."""
