"""REDCap: connections, field mappings, sync state, participant import."""
