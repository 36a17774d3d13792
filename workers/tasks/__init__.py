"""Queue entry points, one module per queue: `workers.tasks.<queue>` routes to `<queue>`."""
