import os
import sys

# The tests import their helper as `helpers`; the package itself is imported as installed (`lib/` is never
# put on sys.path: `lib/flax` would shadow the real flax).
sys.path.insert(0, os.path.dirname(__file__))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
