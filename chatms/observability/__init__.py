"""Metrics and structured logs, fed from the service's turn reports and the database driver."""
