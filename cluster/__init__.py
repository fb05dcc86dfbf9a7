"""Placement on Ray: model actors, ensemble fan-out/fan-in, the IMM coordinator, run storage and tracking."""
