"""The distillation methods as recipes over the engine's steps (:mod:`kd_core.engine`).

One module per method (:mod:`~kd_core.methods.a2d`, :mod:`~kd_core.methods.hinton`,
:mod:`~kd_core.methods.imm` with its summary in :mod:`~kd_core.methods.imm_summary`,
:mod:`~kd_core.methods.mtdnn`, :mod:`~kd_core.methods.students`): its settings dataclass, its
recipe, its summary and table. :mod:`~kd_core.methods.registry` lists them for the generic
drivers (jobs, sweeps).
"""
