"""Meta-learning algorithms, one file each, registering themselves.

Every module in this folder is imported here, so an algorithm's file registers its config
(`metajax.config.register_algorithm`) without any edit elsewhere.
"""

import importlib
import pkgutil

from metajax.algorithms.anil import ANIL
from metajax.algorithms.anp import ANP
from metajax.algorithms.base import FastWeights, GradientLearner, InnerLoopLearner
from metajax.algorithms.cnp import CNP
from metajax.algorithms.convcnp import ConvCNP
from metajax.algorithms.hypernet import GeneratedHead, HyperNet
from metajax.algorithms.imaml import IMAML
from metajax.algorithms.latent_np import LatentNP
from metajax.algorithms.leo import LEO
from metajax.algorithms.maml import MAML, fomaml
from metajax.algorithms.mamlpp import MAMLPlusPlus, multi_step_weights, per_step_sgd
from metajax.algorithms.matchingnet import MatchingNet, SupportMemory
from metajax.algorithms.metasgd import MetaSGD, learned_sgd
from metajax.algorithms.neural_process import Conditioned, NeuralProcess
from metajax.algorithms.pretrain import Pretrained
from metajax.algorithms.protonet import ProtoNet, Prototypes
from metajax.algorithms.relationnet import ClassMaps, RelationNet
from metajax.algorithms.reptile import Reptile, ReptileWeights

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")

__all__ = [
    "ANIL",
    "ANP",
    "CNP",
    "ClassMaps",
    "Conditioned",
    "ConvCNP",
    "GeneratedHead",
    "HyperNet",
    "IMAML",
    "LEO",
    "LatentNP",
    "MAML",
    "NeuralProcess",
    "RelationNet",
    "FastWeights",
    "GradientLearner",
    "InnerLoopLearner",
    "MAMLPlusPlus",
    "MatchingNet",
    "MetaSGD",
    "Pretrained",
    "ProtoNet",
    "Prototypes",
    "Reptile",
    "ReptileWeights",
    "SupportMemory",
    "fomaml",
    "learned_sgd",
    "multi_step_weights",
    "per_step_sgd",
]
