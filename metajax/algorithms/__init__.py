"""Meta-learning algorithms, one file each, on the shared inner-loop engine."""

from metajax.algorithms.base import (
    GradientAlgorithm,
    LossAlgorithm,
    MetaAlgorithm,
    map_chunks,
    map_tasks,
    vmap_mean,
)
from metajax.algorithms.maml import MAML, fomaml
from metajax.algorithms.pretrain import Pretrained
from metajax.algorithms.protonet import ProtoNet

__all__ = [
    "LossAlgorithm",
    "ProtoNet",
    "GradientAlgorithm",
    "MAML",
    "MetaAlgorithm",
    "Pretrained",
    "fomaml",
    "map_chunks",
    "map_tasks",
    "vmap_mean",
]
