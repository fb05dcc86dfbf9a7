"""The rules by which an ensemble's confusing answer is chosen (:mod:`kd_core.knowledge.span`, its module doc).

A name list without torch: A2D's ``--confusing`` option lists and checks it before any model loads.
"""

#: How the confusing answer is chosen: per question (Hu et al. 2018) or per window.
CONFUSING_RULES = ("question", "window")
