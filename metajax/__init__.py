"""metajax: meta-learning in JAX.

Models are pure functions, inner loops run under ``lax.scan`` and are differentiated with
``jax.grad``, tasks of a meta-batch run side by side under ``vmap``, and a whole meta-step is
one compiled XLA program. Every learner follows one protocol (`MetaLearner`): ``init``,
``meta_loss``, ``update``, ``adapt``, ``predict``, ``evaluate_task``.
"""

from metajax import losses
from metajax.algorithms import (
    ANIL,
    IMAML,
    MAML,
    FastWeights,
    GradientLearner,
    MAMLPlusPlus,
    MatchingNet,
    MetaSGD,
    Pretrained,
    ProtoNet,
    Prototypes,
    Reptile,
    fomaml,
)
from metajax.config import (
    Benchmark,
    Config,
    ConfigError,
    Experiment,
    LearnerConfig,
    TrainerConfig,
    get_config,
    override,
    register_algorithm,
    register_config,
)
from metajax.core import (
    InnerLoop,
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
from metajax.core.learner import MetaLearner, Metric, TrainState, apply_meta_gradient
from metajax.datasets.images import ClassImages
from metajax.errors import InputError, StorageError, UserError
from metajax.models import MLP, Conv4, ResNet12, ffi_conv, resolve_conv
from metajax.tasks import Episodes, Sinusoid
from metajax.trained import TrainedLearner, load
from metajax.training import (
    NonFiniteLossError,
    evaluate,
    init_state,
    load_state,
    make_meta_step,
    make_train_fn,
    restore_state,
    save_state,
    train,
)

__version__ = "0.1.0"

__all__ = [
    "ANIL",
    "IMAML",
    "MAML",
    "MLP",
    "Benchmark",
    "ClassImages",
    "Config",
    "ConfigError",
    "InputError",
    "StorageError",
    "UserError",
    "Conv4",
    "Episodes",
    "Experiment",
    "FastWeights",
    "GradientLearner",
    "InnerLoop",
    "InnerResult",
    "LearnerConfig",
    "MAMLPlusPlus",
    "MetaLearner",
    "MetaSGD",
    "Metric",
    "Model",
    "NonFiniteLossError",
    "Pretrained",
    "MatchingNet",
    "ProtoNet",
    "Prototypes",
    "Reptile",
    "ResNet12",
    "Sinusoid",
    "Split",
    "Task",
    "TaskDistribution",
    "TrainState",
    "TrainedLearner",
    "TrainerConfig",
    "adapt",
    "apply_meta_gradient",
    "evaluate",
    "ffi_conv",
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
    "register_algorithm",
    "register_config",
    "resolve_conv",
    "restore_state",
    "sample_tasks",
    "save_state",
    "train",
]
