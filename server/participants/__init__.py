"""participants domain."""
