"""Tasks: what is shape-specific about span QA, classification and regression (see :mod:`.base`).

* :mod:`~kd_core.tasks.base`: the :class:`~kd_core.tasks.base.Task` interface every recipe uses;
* :mod:`~kd_core.tasks.span_qa`, :mod:`~kd_core.tasks.sentence` (classification, regression),
  :mod:`~kd_core.tasks.multitask` (several sentence tasks, one multi-head model);
* :mod:`~kd_core.tasks.definitions`: sentence tasks as YAML data, with their file readers;
* :mod:`~kd_core.tasks.synthetic`: the task of each embedded synthetic data set.
"""
