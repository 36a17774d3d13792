"""participant_auth domain."""
