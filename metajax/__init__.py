"""metajax: meta-learning in JAX.

Models are pure functions, inner loops run under ``lax.scan`` and are differentiated with
``jax.grad``, tasks of a meta-batch run side by side under ``vmap``, and a whole meta-step is
one compiled XLA program.
"""

from metajax import losses
from metajax.algorithms import (
    ANIL,
    IMAML,
    MAML,
    GradientAlgorithm,
    MAMLPlusPlus,
    MetaAlgorithm,
    MetaSGD,
    Pretrained,
    Reptile,
    fomaml,
)
from metajax.config import BaseConfig, Experiment, get_config, override
from metajax.core import (
    InnerResult,
    Model,
    Split,
    Task,
    TaskDistribution,
    adapt,
    from_function,
    from_linen,
    from_nnx,
    sample_tasks,
)
from metajax.learner import Learner, load  # noqa: E402
from metajax.tasks import Sinusoid
from metajax.train import (
    NonFiniteLossError,
    TrainState,
    evaluate,
    init_state,
    load_state,
    make_meta_step,
    make_train_fn,
    train,
)

__version__ = "0.1.0"

__all__ = [
    "ANIL",
    "MAML",
    "MAMLPlusPlus",
    "BaseConfig",
    "Experiment",
    "GradientAlgorithm",
    "IMAML",
    "InnerResult",
    "Learner",
    "MetaAlgorithm",
    "MetaSGD",
    "Model",
    "NonFiniteLossError",
    "Pretrained",
    "Reptile",
    "Sinusoid",
    "Split",
    "Task",
    "TaskDistribution",
    "TrainState",
    "adapt",
    "evaluate",
    "fomaml",
    "from_function",
    "from_linen",
    "from_nnx",
    "get_config",
    "init_state",
    "load",
    "load_state",
    "losses",
    "make_meta_step",
    "make_train_fn",
    "override",
    "sample_tasks",
    "train",
]
