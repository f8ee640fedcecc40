"""target kinds: one module each, discovered by the registry."""
