"""The engine every method runs on: steps as data, one resumable executor, recipes that plan steps.

* :mod:`~kd_core.engine.steps`: the step kinds (train, collect, merge, evaluate, select) and the
  objective specs inside a train step, all frozen, picklable data;
* :mod:`~kd_core.engine.workspace`: a job's task, splits, tokenizers and run directory, with
  features made once per (tokenizer, split);
* :mod:`~kd_core.engine.execute`: runs one step in this process; a step whose result file
  exists returns it (so a job resumes by re-running its recipe);
* :mod:`~kd_core.engine.inputs`: what a step reads (models by name or by step, the objective of
  its terms, its arrays, knowledge checked against its manifest);
* :mod:`~kd_core.engine.train_step`: a train step (the model built as the step says,
  checkpoints, the best epoch);
* :mod:`~kd_core.engine.mixture`: weighted, up-sampled mixtures of splits (IMM);
* :mod:`~kd_core.engine.prepare`: the data options of each kind of job and the workspaces they build;
* :mod:`~kd_core.engine.local`: drives a recipe to the end in one process.

The same :func:`~kd_core.engine.execute.execute` runs in a Ray worker (``cluster.worker``).
"""
