"""modules domain."""
