"""One training loop for every step: :mod:`~kd_core.training.loop` (AdamW, warm-up and decay, clipping,
checkpoints with RNG states, resume) over the batch orders of :mod:`~kd_core.training.sampling`."""
