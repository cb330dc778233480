"""The fault-injection suite's small sinusoid run and its uninterrupted twin."""

import jax
import numpy as np

from metajax.config import get_config, override
from metajax.training.trainer import load_state, train

SMALL = ["hidden=8", "meta_batch_size=2", "eval_tasks=4", "steps_per_dispatch=2",
         "checkpoint_every=4", "log_every=2", "keep_checkpoints=2"]  # fmt: skip


def small_config(*changes: str):
    """sinusoid-maml, tiny: a few ms a step; ``changes`` are --set strings."""
    return override(get_config("sinusoid-maml"), [*SMALL, *changes])


def assert_same_params(a, b):
    """Two runs' final states are bit-for-bit equal."""
    _, _, sa = load_state(a)
    _, _, sb = load_state(b)
    assert int(sa.step) == int(sb.step)
    for x, y in zip(jax.tree.leaves(sa), jax.tree.leaves(sb), strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def reference_run_factory(tmp_path_factory):
    """``reference_run(steps)``: the folder of an uninterrupted run of `small_config`."""
    runs = {}

    def make(steps: int):
        if steps not in runs:
            folder = tmp_path_factory.mktemp(f"reference{steps}")
            train(small_config(f"steps={steps}"), folder)
            runs[steps] = folder
        return runs[steps]

    return make
