"""What the science reads and writes outside its models: errors, run directories, config files, options, CLIs.

* :mod:`~kd_core.io.errors`: the one-line errors (file, where, what) every bad input becomes;
* :mod:`~kd_core.io.run_store`: a run directory as a local path or a ``pyarrow.fs`` URI;
* :mod:`~kd_core.io.run_files`: atomic writes and folder replacement inside it;
* :mod:`~kd_core.io.file_checks`: cheap checks that its files are whole (JSON, Parquet footers,
  safetensors headers), so a corrupt one is found before it is used;
* :mod:`~kd_core.io.config_files`: YAML/JSON config files and ``key=value`` overrides;
* :mod:`~kd_core.io.options`: command-line options generated from config dataclasses;
* :mod:`~kd_core.io.cli`: one command-line entry point (parse, ``--check``, ``--json``, the
  summary, exit status 2 on bad input) that every job and CLI builds on.
"""
