"""Shared test helpers: the model folder and tools/ on sys.path, float64 by default."""
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODEL_DIR = os.path.join(ROOT, "models", "multitask", "maml")
TOOLS_DIR = os.path.join(ROOT, "tools")
SAMPLE_DATA = os.path.join(MODEL_DIR, "data", "sample_data")
SHARED_OMNIGLOT = os.path.join(os.path.dirname(ROOT), "shared", "omniglot")
for path in (MODEL_DIR, TOOLS_DIR):
    if path not in sys.path:
        sys.path.insert(0, path)

import utils  # noqa: E402,F401  (sets MKL_DEBUG_CPU_TYPE on AMD before Paddle loads)
