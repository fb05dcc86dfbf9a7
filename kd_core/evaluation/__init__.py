"""Reading a model's outputs: decoding, batched prediction, the metrics of each task kind, speed, scored files.

* :mod:`~kd_core.evaluation.decode`: the best legal spans from start/end scores;
* :mod:`~kd_core.evaluation.predict`: batched QA inference, ensembles, answers per question;
* :mod:`~kd_core.evaluation.squad_metrics`: SQuAD v1.1/v2 EM and F1 as the official scripts,
  the adversarial rule;
* :mod:`~kd_core.evaluation.sentence_metrics`, :mod:`~kd_core.evaluation.free_form_metrics`:
  GLUE-style metrics; BLEU and ROUGE for free-form answers;
* :mod:`~kd_core.evaluation.speed`: latency and throughput of several models side by side;
* :mod:`~kd_core.evaluation.squad_files`: a SQuAD dataset file and a predictions file scored
  as the official script does (``python jobs/evaluate.py``).
"""
