"""What a student minimises: pure losses with the papers' formulas, and the terms and schedules built on them.

* :mod:`~kd_core.objectives.losses`: per-example output losses (CE, soft targets at ``tau``,
  A2D's margin and attention terms, IMM's MSE terms, regression), formula in each docstring;
* :mod:`~kd_core.objectives.layer_losses`: intermediate-layer losses (hidden states,
  attention, relations);
* :mod:`~kd_core.objectives.terms`: a weighted term, schedules of weights, an objective as the
  sum of its terms;
* :mod:`~kd_core.objectives.layer_distillation`: a frozen layer teacher, the student's
  captures and projections, as terms;
* :mod:`~kd_core.objectives.noise`: a noisy teacher (perturbed logits).
"""
