"""People: groups and the roles they grant (and, with the sign-in helper, sessions and tokens)."""
