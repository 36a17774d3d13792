"""Metricis API tier."""
