"""Few-shot Omniglot: MAML (Finn et al. 2017, 5.2), first-order MAML and Prototypical
Networks (Snell et al. 2017), on the standard splits and on the Omniglot Challenge's minimal
setting.

Paper settings:
  - MAML: 5-way 1-shot, Conv4 with transductive batch norm, meta-batch 32, one inner SGD step
    of 0.4 at training and 3 at test, Adam 1e-3, 60,000 meta-steps, `vinyals` split with
    rotations. 15 query examples per class.
  - ProtoNets: Conv4, one episode per step with a higher training way (60 classes, 5
    queries), Adam 1e-3 halved every 2,000 episodes, `vinyals` split with rotations.

The rest of the optimization-based family, paper settings on the ``vinyals`` split:
  - ``omniglot-reptile``: Nichol et al. 2018 (Appendix A): 5 inner Adam steps (lr 1e-3,
    beta1 0), 50 at test, meta-batch 5, outer SGD with step 1.0 decayed linearly to 0 over
    100,000 steps; the whole support set is the inner batch. Transductive, as its 97.68%.
  - ``omniglot-metasgd``: Li et al. 2017: MAML's setting with learned per-parameter rates
    (started at MAML's 0.4; the paper draws them from [0.005, 0.1]).
  - ``omniglot-anil``: Raghu et al. 2020: MAML's setting, the head alone adapted.
  - ``omniglot-imaml``: Rajeswaran et al. 2019: 16 proximal gradient steps, lambda 2, 5 CG
    steps, meta-batch 32.
  - ``omniglot-mamlpp``: Antoniou et al. 2019: 5 inner steps (LSLR from 0.1), meta-batch 8,
    every switch on: multi-step loss over 7,500 steps, first order for 25,000, per-step
    norm copies, cosine outer rate from 1e-3 to 1e-5 over 50,000 steps.

``omniglot-minimal-*`` meta-train on ``images_background_small1`` (5 alphabets, with the four
rotations as extra classes) and meta-test on the 3 alphabets of small2 that small1 lacks,
without rotations: sized to finish in under 30 minutes on a 2-core CPU.
"""

from __future__ import annotations

import dataclasses

from metajax.config import ConfigError, register_config
from metajax.configs.fewshot import (
    MAMLPP_SETTINGS,
    REPTILE_SETTINGS,
    FewShotBenchmark,
    fewshot_config,
)
from metajax.datasets import omniglot
from metajax.datasets.images import to_float


@dataclasses.dataclass(frozen=True)
class OmniglotBenchmark(FewShotBenchmark):
    """N-way K-shot Omniglot (fields of `metajax.configs.fewshot.FewShotBenchmark`, and):

    Attributes:
      split: ``vinyals``, ``lake``, ``minimal1`` or ``minimal2``.
      image_size: images are resized to this square.
    """

    split: str = "vinyals"
    image_size: int = 28
    train_rotations: bool = True
    test_rotations: bool = True

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return (self.image_size, self.image_size, 1)

    def preprocess(self, raw):
        """Raw archive images to model inputs, exactly as in training (for `metajax.load`)."""
        return to_float(omniglot.preprocess(raw, self.image_size))

    def validate(self, name: str) -> None:
        super().validate(name)
        if self.split not in omniglot.SPLITS:
            raise ConfigError(
                f"Config {name}: split must be one of {omniglot.SPLITS}, got {self.split!r}."
            )
        if self.image_size < 4:
            raise ConfigError(f"Config {name}: image_size must be >= 4, got {self.image_size}.")

    def load_data(self):
        return omniglot.load_split(self.split, self.data_dir or None, self.image_size)


# Meta-steps of the minimal configs, sized from each algorithm's step time on this CPU.
MINIMAL_STEPS = {"maml": 600, "reptile": 1500, "metasgd": 600, "anil": 1500, "imaml": 600,
                 "mamlpp": 300}  # fmt: skip
_FULL = OmniglotBenchmark()
_MINIMAL = OmniglotBenchmark(split="minimal1", test_rotations=False)
_MAMLPP = {**MAMLPP_SETTINGS, "inner_lr": 0.1, "inner_steps": 5, "meta_batch_size": 8}
# The minimal setting for the rest of the family: 4 tasks a step like omniglot-minimal-fomaml,
# with fewer steps where a step costs more (each run fits the 30-minute budget on this 2-core
# CPU; step times in experiments/RESULTS.md).
_MINIMAL_FAMILY = dict(meta_batch_size=4)

_CONFIGS = {
    "omniglot-maml": (_FULL, "MAML, Finn et al. 2017: 5-way 1-shot, vinyals split", {}),
    "omniglot-fomaml": (_FULL, "first-order MAML, same settings", dict(algorithm="fomaml")),
    "omniglot-protonet": (
        _FULL,
        "ProtoNet, Snell et al. 2017: 60-way training episodes, vinyals split",
        dict(algorithm="protonet", meta_batch_size=1, train_way=60, train_query=5,
             lr_halve_every=2000, steps=20_000),
    ),
    # Minimal setting, sized for a 2-core CPU: 20-way training episodes (0.19 s a step here,
    # against 0.61 s at 60-way) and a faster learning-rate schedule.
    "omniglot-minimal-protonet": (
        _MINIMAL,
        "ProtoNet on the minimal setting, 3,000 20-way episodes (~11 min on 2 cores)",
        dict(algorithm="protonet", meta_batch_size=1, train_way=20, train_query=5,
             lr_halve_every=1000, steps=3000),
    ),
    "omniglot-minimal-matchingnet": (
        _MINIMAL,
        "Matching Networks on the minimal setting, ProtoNet's 3,000 20-way episodes",
        dict(algorithm="matchingnet", meta_batch_size=1, train_way=20, train_query=5,
             lr_halve_every=1000, steps=3000),
    ),
    "omniglot-minimal-relationnet": (
        _MINIMAL,
        "Relation Networks on the minimal setting, 20-way episodes of 5 queries",
        dict(algorithm="relationnet", meta_batch_size=1, train_way=20, train_query=5,
             lr_halve_every=1000, steps=3000),
    ),
    "omniglot-minimal-hypernet": (
        _MINIMAL,
        "Hypernetwork heads with a FiLM body on the minimal setting, 20-way episodes",
        dict(algorithm="hypernet", meta_batch_size=1, train_way=20, train_query=5,
             lr_halve_every=1000, steps=3000),
    ),
    "omniglot-minimal-leo": (
        _MINIMAL,
        "LEO-style latent adaptation of generated heads on the minimal setting",
        dict(algorithm="leo", meta_batch_size=1, train_way=20, train_query=5,
             lr_halve_every=1000, steps=3000),
    ),
    # 4 tasks a step, each in turn (task_chunk auto = 1 on CPU), ~0.65 s a step here.
    "omniglot-minimal-fomaml": (
        _MINIMAL,
        "first-order MAML on the minimal setting, meta-batch 4, 2,000 steps",
        dict(algorithm="fomaml", meta_batch_size=4, steps=2000),
    ),
    "omniglot-reptile": (_FULL, "Reptile, Nichol et al. 2018 (Appendix A)",
                         {**REPTILE_SETTINGS, "inner_steps": 5, "meta_batch_size": 5}),
    # Meta-SGD's rates are learned for its one training step, which is also its test protocol.
    "omniglot-metasgd": (_FULL, "Meta-SGD, Li et al. 2017, MAML's setting",
                         dict(algorithm="metasgd", eval_steps=())),
    "omniglot-anil": (_FULL, "ANIL, Raghu et al. 2020, MAML's setting",
                      dict(algorithm="anil")),
    "omniglot-imaml": (_FULL, "iMAML, Rajeswaran et al. 2019: 16 proximal steps, lambda 2",
                       dict(algorithm="imaml", imaml_lambda=2.0, inner_steps=16,
                            eval_steps=(16,))),
    "omniglot-mamlpp": (_FULL, "MAML++, Antoniou et al. 2019, every switch on", _MAMLPP),
    "omniglot-minimal-maml": (
        _MINIMAL, "MAML on the minimal setting, meta-batch 4",
        dict(algorithm="maml", **_MINIMAL_FAMILY, steps=MINIMAL_STEPS["maml"]),
    ),
    "omniglot-minimal-reptile": (
        _MINIMAL, "Reptile on the minimal setting",
        {**REPTILE_SETTINGS, "inner_steps": 5, **_MINIMAL_FAMILY,
         "steps": MINIMAL_STEPS["reptile"]},
    ),
    "omniglot-minimal-metasgd": (
        _MINIMAL, "Meta-SGD on the minimal setting",
        dict(algorithm="metasgd", eval_steps=(), **_MINIMAL_FAMILY,
             steps=MINIMAL_STEPS["metasgd"]),
    ),
    "omniglot-minimal-anil": (
        _MINIMAL, "ANIL on the minimal setting",
        dict(algorithm="anil", **_MINIMAL_FAMILY, steps=MINIMAL_STEPS["anil"]),
    ),
    # Fixed-rate proximal SGD let meta-training sharpen the support loss until the inner loop
    # stopped converging (26.3%, RESULTS.md); Armijo backtracking from 0.4 keeps it downhill.
    "omniglot-minimal-imaml": (
        _MINIMAL, "iMAML on the minimal setting, backtracking SGD inner solver",
        dict(algorithm="imaml", imaml_lambda=2.0, inner_optimizer="sgd_linesearch",
             inner_steps=5, eval_steps=(5,), **_MINIMAL_FAMILY,
             steps=MINIMAL_STEPS["imaml"]),
    ),
    # MAML++ scaled to the budget: 2 inner steps, annealing over the run's first half.
    "omniglot-minimal-mamlpp": (
        _MINIMAL, "MAML++ on the minimal setting, 2 inner steps",
        {**_MAMLPP, "inner_steps": 2, "eval_steps": (2,), **_MINIMAL_FAMILY,
         "steps": MINIMAL_STEPS["mamlpp"], "msl_anneal_steps": MINIMAL_STEPS["mamlpp"] // 2,
         "first_order_steps": MINIMAL_STEPS["mamlpp"] // 4},
    ),
}  # fmt: skip

for _name, (_bench, _description, _changes) in _CONFIGS.items():
    register_config(
        _name,
        lambda n=_name, b=_bench, d=_description, c=_changes: fewshot_config(n, b, d, **c),
    )
