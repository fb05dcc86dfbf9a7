"""Test session set-up: no model hub (only local files), quiet and reproducible."""

import os

# Read at import time by huggingface_hub / datasets: set before anything imports them.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
