"""The demo shop: orders confirmed by a reliable task."""
