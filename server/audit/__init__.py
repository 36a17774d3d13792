"""The audit trail: an append-only, hash-chained record of staff actions and data access."""
