"""Teacher knowledge: what teachers know, as keyed Arrow/Parquet tables with a provenance manifest.

* :mod:`~kd_core.knowledge.table`: fixed-size-list columns, atomic Parquet writes, metadata.
* :mod:`~kd_core.knowledge.manifest`: what a table was made from (task, teachers and a hash of
  their weights, tokenizer hash, window settings, data fingerprint, schema version), and the
  check that refuses a table made for other features.
* :mod:`~kd_core.knowledge.span`: span-QA member tables, the ensemble merge (confusing
  answer, attention), keyed by feature id.
* classification (class logits) and regression (value) tables, keyed by example id so a student
  with its own tokenizer can read them, are written and read by their tasks
  (:mod:`kd_core.tasks.sentence`) with :mod:`~kd_core.knowledge.table`'s columns.
"""
