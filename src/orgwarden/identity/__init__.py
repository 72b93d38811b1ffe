"""People: signing them in (``oidc``), and the groups they are in and the roles those grant (``groups``)."""
