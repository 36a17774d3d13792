"""Embedded PostgreSQL and Redis for development and tests, from pip packages.

Not part of the application: `server` and `workers` never import it, and a production install
(requirements.txt) does not carry the packages it needs.
"""
