"""batteries domain."""
