"""kd_core: the science of the distillation system (data, models, losses, decoding, metrics, training).

Plain PyTorch, transformers, datasets and pyarrow: nothing in this package imports Ray or
MLflow, so everything here runs and is tested in one process.
"""
