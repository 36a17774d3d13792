"""assessment_sessions domain."""
