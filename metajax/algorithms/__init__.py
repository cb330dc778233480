"""Meta-learning algorithms, one file each, on the shared inner-loop engine."""

from metajax.algorithms.anil import ANIL
from metajax.algorithms.base import (
    GradientAlgorithm,
    LossAlgorithm,
    MetaAlgorithm,
    map_chunks,
    map_tasks,
    vmap_mean,
)
from metajax.algorithms.imaml import IMAML
from metajax.algorithms.maml import MAML, fomaml
from metajax.algorithms.mamlpp import MAMLPlusPlus, multi_step_weights, per_step_sgd
from metajax.algorithms.metasgd import MetaSGD, learned_sgd
from metajax.algorithms.pretrain import Pretrained
from metajax.algorithms.protonet import ProtoNet
from metajax.algorithms.reptile import Reptile

__all__ = [
    "ANIL",
    "LossAlgorithm",
    "ProtoNet",
    "GradientAlgorithm",
    "IMAML",
    "MAML",
    "MAMLPlusPlus",
    "MetaAlgorithm",
    "MetaSGD",
    "Reptile",
    "Pretrained",
    "fomaml",
    "learned_sgd",
    "map_chunks",
    "map_tasks",
    "multi_step_weights",
    "per_step_sgd",
    "vmap_mean",
]
