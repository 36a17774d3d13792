"""user_sessions domain."""
