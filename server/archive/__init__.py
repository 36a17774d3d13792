"""archive domain."""
