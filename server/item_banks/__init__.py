"""item_banks domain."""
