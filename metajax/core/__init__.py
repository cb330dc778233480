"""The functional core: task pytrees, models as pure functions, the inner-loop engine."""

from metajax.core.functional import Model, from_function, from_linen, from_nnx
from metajax.core.inner import InnerLoop, InnerResult, adapt
from metajax.core.types import Split, Task, TaskDistribution, sample_tasks

__all__ = [
    "InnerLoop",
    "InnerResult",
    "Model",
    "Split",
    "Task",
    "TaskDistribution",
    "adapt",
    "from_function",
    "from_linen",
    "from_nnx",
    "sample_tasks",
]
