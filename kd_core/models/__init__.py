"""Teacher and student models: names, tokenizers, building and loading, one forward form, the special students.

* :mod:`~kd_core.models.presets`: tiny presets and shape names built from a configuration, and
  the resolution of every other name (a hub id or a local folder);
* :mod:`~kd_core.models.tokenizers`: WordPiece and word-level tokenizers trained locally and
  deterministically, or loaded;
* :mod:`~kd_core.models.build`: models built or loaded with a task's head, cut to chosen
  layers, saved in ``save_pretrained`` form;
* :mod:`~kd_core.models.forward`: :func:`~kd_core.models.forward.qa_forward`, one output for
  every QA model, with A2D's question-passage attention on request;
* :mod:`~kd_core.models.bilstm`, :mod:`~kd_core.models.multihead`: the BiLSTM student and the
  multi-head MT-DNN encoder, both in Hugging Face form;
* :mod:`~kd_core.models.layer_capture`: hooks that capture a transformer's layers (hidden
  states, attention, query/key/value) for intermediate-layer terms.
"""
