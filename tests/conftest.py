"""Shared test helpers."""

import os

# Tests run on the CPU; keep XLA from grabbing every core's thread pool twice over.
os.environ.setdefault("JAX_PLATFORMS", "cpu")
