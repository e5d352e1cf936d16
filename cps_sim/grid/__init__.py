"""grid layer."""
