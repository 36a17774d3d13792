"""PDF reports: a participant's course across visits, one session, a study's progress."""
