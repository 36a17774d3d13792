"""studies domain."""
