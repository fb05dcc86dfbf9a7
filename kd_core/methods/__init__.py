"""The distillation methods as recipes over the engine's steps (:mod:`kd_core.engine`)."""
