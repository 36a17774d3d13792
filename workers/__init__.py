"""Metricis background workers: the Celery app, its queues, beat schedule and tasks."""
