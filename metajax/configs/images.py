"""Few-shot classification on natural images: mini-ImageNet, CIFAR-FS and FC100.

Paper settings:
  - ``miniimagenet-maml`` / ``-fomaml``: Finn et al. 2017 (5.2): 5-way 1-shot, Conv4 with 32
    filters, 5 inner SGD steps of 0.01 at training and 10 at test, meta-batch 4, 15 queries,
    Adam 1e-3, 60,000 meta-steps. Reported: 48.70 +/- 1.84% (MAML), 48.07 +/- 1.75% (FOMAML).
  - ``miniimagenet-protonet``: Snell et al. 2017: Conv4 (64 filters), 30-way 1-shot training
    episodes with 15 queries, Adam 1e-3 halved every 2,000 episodes, 5-way test. Reported:
    49.42 +/- 0.78% (1-shot), 68.20 +/- 0.66% (5-shot, trained 20-way 5-shot).
  - ``cifarfs-protonet`` / ``fc100-protonet``: ProtoNet with ResNet12 at 32x32, as compared
    in Lee et al. 2019 (MetaOptNet), which reports 72.2 +/- 0.7% (CIFAR-FS) and
    37.5 +/- 0.6% (FC100), 5-way 1-shot.

  - The rest of the optimization-based family on mini-ImageNet, each paper's setting:
    ``miniimagenet-reptile`` (Nichol et al. 2018: 8 inner Adam steps of 1e-3, 50 at test,
    meta-batch 5, outer step 1.0 decayed linearly to 0 over 100,000 steps; reported
    49.97 +/- 0.32% transductive), ``miniimagenet-metasgd`` (Li et al. 2017: one learned-rate
    step; 50.47 +/- 1.87%), ``miniimagenet-anil`` (Raghu et al. 2020: MAML's setting, head
    only; 46.7 +/- 0.4%), ``miniimagenet-imaml`` (Rajeswaran et al. 2019: lambda 0.5, 10
    steps; 49.30 +/- 1.88%), ``miniimagenet-mamlpp`` (Antoniou et al. 2019: 48 filters, 5
    LSLR steps from 0.01, meta-batch 2, every switch on; 52.15 +/- 0.26%).

None of these data sets is on this machine: the configs stop at the loader's clear error
naming the file to fetch and where to put it.
"""

from __future__ import annotations

import dataclasses
import functools

from metajax.config import ConfigError, register_config
from metajax.configs.fewshot import (
    MAMLPP_SETTINGS,
    REPTILE_SETTINGS,
    FewShotBenchmark,
    fewshot_config,
)
from metajax.datasets import cifar, mini_imagenet

DATASETS = ("mini-imagenet", "cifar-fs", "fc100")


@dataclasses.dataclass(frozen=True)
class ImageBenchmark(FewShotBenchmark):
    """N-way K-shot natural images (fields of `metajax.configs.fewshot.FewShotBenchmark`, and):

    Attributes:
      dataset: ``mini-imagenet``, ``cifar-fs`` or ``fc100``.
      test_split: ``test``, or ``val`` for model selection.
    """

    dataset: str = "mini-imagenet"
    test_split: str = "test"

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return (84, 84, 3) if self.dataset == "mini-imagenet" else (32, 32, 3)

    def validate(self, name: str) -> None:
        super().validate(name)
        if self.dataset not in DATASETS or self.test_split not in ("val", "test"):
            raise ConfigError(
                f"Config {name}: dataset must be one of {DATASETS} and test_split val or "
                f"test; got {self.dataset!r}, {self.test_split!r}."
            )

    def load_data(self):
        root = self.data_dir or None
        if self.dataset == "mini-imagenet":
            load = functools.partial(mini_imagenet.load_split, root=root)
        else:
            load = functools.partial(cifar.load_split, self.dataset, root=root)
        return load("train"), load(self.test_split)


_MINI = ImageBenchmark(filters=32)
_MAML = dict(inner_lr=0.01, inner_steps=5, eval_steps=(10,), meta_batch_size=4)
_PROTONET = dict(algorithm="protonet", meta_batch_size=1, train_way=30, lr_halve_every=2000,
                 steps=20_000)  # fmt: skip

_CONFIGS = {
    "miniimagenet-maml": (_MINI, "MAML, Finn et al. 2017 (5.2)", _MAML),
    "miniimagenet-fomaml": (_MINI, "first-order MAML, same settings",
                            {**_MAML, "algorithm": "fomaml"}),
    "miniimagenet-reptile": (_MINI, "Reptile, Nichol et al. 2018",
                             {**_MAML, **REPTILE_SETTINGS, "inner_steps": 8,
                              "meta_batch_size": 5}),
    "miniimagenet-metasgd": (_MINI, "Meta-SGD, Li et al. 2017: one learned-rate step",
                             {**_MAML, "algorithm": "metasgd", "inner_steps": 1,
                              "eval_steps": ()}),
    "miniimagenet-anil": (_MINI, "ANIL, Raghu et al. 2020", {**_MAML, "algorithm": "anil"}),
    "miniimagenet-imaml": (_MINI, "iMAML, Rajeswaran et al. 2019: lambda 0.5, 10 steps",
                           {**_MAML, "algorithm": "imaml", "imaml_lambda": 0.5,
                            "inner_steps": 10, "eval_steps": (10,)}),
    "miniimagenet-mamlpp": (ImageBenchmark(filters=48), "MAML++, Antoniou et al. 2019",
                            {**_MAML, **MAMLPP_SETTINGS, "inner_lr": 0.01,
                             "meta_batch_size": 2}),
    "miniimagenet-protonet": (ImageBenchmark(), "ProtoNet, Snell et al. 2017: 30-way training",
                              _PROTONET),
    "cifarfs-protonet": (ImageBenchmark(dataset="cifar-fs", backbone="resnet12"),
                         "ProtoNet with ResNet12 on CIFAR-FS", {**_PROTONET, "train_way": 5}),
    "fc100-protonet": (ImageBenchmark(dataset="fc100", backbone="resnet12"),
                       "ProtoNet with ResNet12 on FC100", {**_PROTONET, "train_way": 5}),
}  # fmt: skip

for _name, (_bench, _description, _changes) in _CONFIGS.items():
    register_config(
        _name,
        lambda n=_name, b=_bench, d=_description, c=_changes: fewshot_config(n, b, d, **c),
    )
