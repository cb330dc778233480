"""Omniglot character completion with Neural Processes (`metajax.tasks.completion`).

``omniglot-completion-{cnp,anp}`` train on the characters of the minimal setting's training
alphabets (``images_background_small1``, no rotations) and test on held-out alphabets (the
three of small2 that small1 lacks), 28x28 pixels, with 3 to 199 context pixels; evaluation
reports the per-pixel log-likelihood from 10, 50 and 200 context pixels. The ANP is the
conditional one (``latent_dim=0``: self-attention over the context, cross-attention from each
pixel), sized for a 2-core CPU.
"""

from __future__ import annotations

import dataclasses

from metajax.config import (
    Benchmark,
    BuildEnv,
    Config,
    ConfigError,
    LearnerConfig,
    TrainerConfig,
    algorithm_config,
    function_env,
    register_config,
)
from metajax.datasets import omniglot
from metajax.datasets.download import data_dir
from metajax.tasks.completion import ImageCompletion


@dataclasses.dataclass(frozen=True)
class CompletionBenchmark(Benchmark):
    """Omniglot characters as functions from pixel coordinates to intensity.

    Attributes:
      split: the Omniglot split (`metajax.datasets.omniglot.SPLITS`).
      image_size: images are resized to this square.
      data_dir: where the archives are (default: ``$METAJAX_DATA_DIR`` or the cache).
      min_context, max_context: the training context size range.
    """

    split: str = "minimal1"
    image_size: int = 28
    data_dir: str = ""
    min_context: int = 3
    max_context: int = 200
    kind = "process"

    def validate(self, name: str) -> None:
        super().validate(name)
        if self.split not in omniglot.SPLITS:
            raise ConfigError(f"Config {name}: split must be one of {omniglot.SPLITS}, got "
                              f"{self.split!r}.")  # fmt: skip
        if not 1 <= self.min_context < self.max_context <= self.image_size**2:
            raise ConfigError(
                f"Config {name}: needs 1 <= min_context < max_context <= image_size**2, got "
                f"{self.min_context}, {self.max_context}."
            )

    def check_learner(self, learner: LearnerConfig, trainer: TrainerConfig, name: str) -> None:
        del trainer
        sizes = getattr(learner, "eval_context_sizes", ())
        if sizes and max(sizes) >= self.image_size**2:
            raise ConfigError(f"Config {name}: eval_context_sizes {sizes} must be below the "
                              f"{self.image_size**2} pixels.")  # fmt: skip
        if learner.algorithm == "convcnp":
            raise ConfigError(f"Config {name}: convcnp is 1-D here; images need cnp, np or anp.")

    def tasks(self) -> tuple[ImageCompletion, ImageCompletion]:
        train, test = omniglot.load_split(self.split, self.data_dir or None, self.image_size)
        return (ImageCompletion(train, self.min_context, self.max_context),
                ImageCompletion(test, self.min_context, self.max_context))  # fmt: skip

    def resolve_paths(self) -> CompletionBenchmark:
        return dataclasses.replace(self, data_dir=str(data_dir(self.data_dir or None).resolve()))

    def env(self, learner: LearnerConfig, trainer: TrainerConfig, name: str) -> BuildEnv:
        del learner, trainer
        return function_env(name, 2, 1, (-1.0, 1.0), "a Neural Process learner (cnp, np or anp)")


COMPLETION_STEPS = {"cnp": 10_000, "anp": 3_000}


def completion_config(name: str, algorithm: str, description: str) -> Config:
    # The ANP is conditional (no latent path): the latent posterior would self-attend over all
    # 784 pixels, ~40x the cost of a step on a 2-core CPU.
    latent = {"latent_dim": 0} if algorithm == "anp" else {}
    learner = algorithm_config(algorithm)(eval_context_sizes=(10, 50, 200), **latent)
    trainer = TrainerConfig(steps=COMPLETION_STEPS[algorithm], meta_batch_size=16, outer_lr=5e-4,
                            lr_schedule="cosine", log_every=250, checkpoint_every=1000,
                            eval_tasks=500)  # fmt: skip
    return Config(name, CompletionBenchmark(), learner, trainer, description)


_CONFIGS = {
    "omniglot-completion-cnp": ("cnp", "CNP completing held-out Omniglot characters from pixels"),
    "omniglot-completion-anp": ("anp", "ANP completing held-out Omniglot characters from pixels"),
}

for _name, (_algorithm, _description) in _CONFIGS.items():
    register_config(_name, lambda n=_name, a=_algorithm, d=_description: completion_config(n, a, d))
