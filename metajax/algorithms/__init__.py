"""Meta-learning algorithms, one file each, on the shared inner-loop engine."""

from metajax.algorithms.base import GradientAlgorithm, MetaAlgorithm, vmap_mean
from metajax.algorithms.maml import MAML, fomaml
from metajax.algorithms.pretrain import Pretrained

__all__ = ["GradientAlgorithm", "MAML", "MetaAlgorithm", "Pretrained", "fomaml", "vmap_mean"]
