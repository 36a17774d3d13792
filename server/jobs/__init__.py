"""Background jobs as the API shows them, and the dead-letter record."""
