"""Placement on Ray: the job runtime, step workers and their pool, data-parallel steps, tracking."""
