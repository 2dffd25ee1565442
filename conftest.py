"""Collection rules for the whole repository (doctests in sigmoid_xent/ and tests/).

sigmoid_xent/keras.py needs the optional Keras 3 on its JAX backend: its doctests are collected
only when keras is installed, with KERAS_BACKEND defaulting to jax (set before anything imports
keras). tests/test_keras.py skips itself the same way.
"""

from __future__ import annotations

import importlib.util
import os

os.environ.setdefault("KERAS_BACKEND", "jax")

collect_ignore: list[str] = []
if importlib.util.find_spec("keras") is None or os.environ["KERAS_BACKEND"] != "jax":
    collect_ignore.append("sigmoid_xent/keras.py")
