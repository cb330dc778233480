"""The named configs, registered on import (`metajax.config.get_config` finds them).

Each module composes a benchmark, a learner and a trainer: `sinusoid` (Finn et al. 2017's
regression), `gp` (the Neural Process family's Gaussian-process functions), `omniglot` and `images` (few-shot classification on `fewshot`'s benchmark).
"""

from metajax.configs import completion, gp, images, omniglot, sinusoid  # noqa: F401  (they register)
