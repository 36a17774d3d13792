"""Server-side scoring of stored submissions, and the data-quality checks on them."""
