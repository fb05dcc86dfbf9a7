"""kd_core: the science of the distillation system, in floors (each imports only the floors below it).

From the bottom: ``io`` (errors, run directories, config files, options, the command line),
``models``, ``data``, ``objectives`` (losses, terms), ``training``, ``evaluation``,
``knowledge``, ``tasks``, ``serving``, ``engine`` (steps and their executor) and ``methods``
(the recipes). Plain PyTorch, transformers, datasets and pyarrow: nothing in this package
imports Ray or MLflow, so everything here runs and is tested in one process.
"""
