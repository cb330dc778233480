"""Fixtures of the fault-injection suite."""

import pytest
from _reliability import reference_run_factory


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory):
    """``reference_run(steps)``: the folder of an uninterrupted run of `small_config`."""
    return reference_run_factory(tmp_path_factory)
