"""Visit schedules: a study's protocol, and each participant's visits in their own time zone."""
