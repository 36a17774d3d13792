"""Shared plumbing: config, database, security, errors, logging."""
