"""The shared benchmark of N-way K-shot image classification: the episodes, the backbone
(Conv4, ResNet12), and the CPU convolution choice; any registered algorithm learns on it.

A data set's benchmark subclasses `FewShotBenchmark` and supplies its data (`load_data`), its
image shape and its raw-input preprocessing; see `metajax.configs.omniglot` and ``images``.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import numpy as np
from flax import nnx

from metajax import kernels, losses
from metajax.config import (
    Benchmark,
    BuildEnv,
    Config,
    ConfigError,
    LearnerConfig,
    TrainerConfig,
    algorithm_config,
)
from metajax.core.functional import Model, from_nnx
from metajax.datasets.download import data_dir
from metajax.datasets.images import ClassImages, check_raw_images, to_float
from metajax.models import Conv4, ResNet12
from metajax.models.conv4 import CONV_IMPLS
from metajax.tasks import Episodes

BACKBONES = ("conv4", "resnet12")

# The papers' optimizer settings that the Omniglot and mini-ImageNet configs share, as
# `metajax.config.Config.replace` fields.
# Reptile (Nichol et al. 2018, Appendix A): inner Adam with beta1 = 0, 50 steps at test, the
# outer step size 1.0 decayed linearly to 0 over 100,000 steps.
REPTILE_SETTINGS = dict(algorithm="reptile", inner_optimizer="adam", inner_lr=1e-3,
                        eval_steps=(50,), outer_optimizer="sgd", outer_lr=1.0,
                        lr_schedule="linear", steps=100_000)  # fmt: skip
# MAML++ (Antoniou et al. 2019): 5 steps at test, 100 epochs of 500 meta-steps, multi-step loss
# over the first 15 epochs, first order for the first 50, cosine outer rate down to 1e-5.
MAMLPP_SETTINGS = dict(algorithm="mamlpp", eval_steps=(5,), steps=50_000,
                       msl_anneal_steps=7500, first_order_steps=25_000, lr_schedule="cosine",
                       min_outer_lr=1e-5)  # fmt: skip


@dataclasses.dataclass(frozen=True)
class FewShotBenchmark(Benchmark):
    """N-way K-shot classification over a class-indexed image data set.

    Attributes:
      backbone: ``conv4`` or ``resnet12``.
      filters: Conv4's channels per block.
      data_dir: the folder with the data files (default ``$METAJAX_DATA_DIR`` or
        ~/.cache/metajax); a run records the folder it trained from.
      n_way, k_shot, k_query: the test episodes (and the training ones unless train_way is set).
      train_way: classes per training episode (ProtoNets train with more); 0 means n_way.
      train_query: query examples per class in training episodes.
      train_rotations: rotated classes as extra training classes.
      test_rotations: rotated classes at test.
      conv: the backbone's convolution, ``ffi``, ``xla``, ``im2col`` or ``taps`` (same
        results); ``auto`` picks metajax's C++ kernel (``ffi``, `metajax.models.ffi_conv`) on
        CPU, and where it cannot be built, im2col whenever the tasks run one after another
        (see task_chunk) or have their own weights: XLA:CPU's convolution is ~10x slower
        under ``vmap`` with per-task weights and inside a loop body
        (``benchmarks/RESULTS.md``). XLA's on GPU/TPU.
      task_chunk: tasks run together under ``vmap`` (see `metajax.core.learner.map_chunks`);
        0 vmaps the whole meta-batch; -1 (auto) is 1 on CPU (one task at a time keeps each
        task's activations in cache: ProtoNet's meta-batch of 32 ran 1.9x faster), else 0.
    """

    kind = "classification"
    backbone: str = "conv4"
    filters: int = 64
    data_dir: str = ""
    n_way: int = 5
    k_shot: int = 1
    k_query: int = 15
    train_way: int = 0
    train_query: int = 15
    train_rotations: bool = False
    test_rotations: bool = False
    conv: str = "auto"
    task_chunk: int = -1

    # ---- a data set's part ---------------------------------------------------------------

    def load_data(self) -> tuple[ClassImages, ClassImages]:
        """``(meta-train, meta-test)`` data; a data set's benchmark defines it."""
        raise NotImplementedError(f"{type(self).__name__}.load_data() is not defined.")

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """``(H, W, C)`` of the model's input images."""
        raise NotImplementedError

    def preprocess(self, raw: np.ndarray) -> jax.Array:
        """Raw inputs (as the data set stores them) to model inputs, exactly as in training
        (used by `metajax.load`). The default: uint8 ``[n, H, W, C]`` to floats in [0, 1]."""
        return to_float(check_raw_images(raw))

    # ---- the benchmark -----------------------------------------------------------------------

    def resolve_paths(self) -> FewShotBenchmark:
        return dataclasses.replace(self, data_dir=str(data_dir(self.data_dir or None).resolve()))

    def validate(self, name: str) -> None:
        super().validate(name)
        choices = {"backbone": BACKBONES, "conv": ("auto", *CONV_IMPLS)}
        for field, allowed in choices.items():
            if getattr(self, field) not in allowed:
                raise ConfigError(
                    f"Config {name}: {field} must be one of {', '.join(allowed)}, got "
                    f"{getattr(self, field)!r}."
                )
        for field in ("n_way", "k_shot", "k_query", "train_query", "filters"):
            if getattr(self, field) < 1:
                raise ConfigError(
                    f"Config {name}: {field} must be >= 1, got {getattr(self, field)}."
                )
        if self.train_way < 0 or self.task_chunk < -1:
            raise ConfigError(
                f"Config {name}: train_way must be >= 0 and task_chunk >= -1, got "
                f"{self.train_way} and {self.task_chunk}."
            )

    def check_learner(self, learner: LearnerConfig, trainer: TrainerConfig, name: str) -> None:
        """Settings that depend on the learner and the trainer."""
        if learner.fixed_way and self.train_way not in (0, self.n_way):
            raise ConfigError(
                f"Config {name}: {learner.algorithm}'s head has n_way outputs, so it trains and "
                f"tests at the same way; got train_way={self.train_way}, n_way={self.n_way}."
            )
        if self.task_chunk > 0 and trainer.meta_batch_size % self.task_chunk:
            raise ConfigError(
                f"Config {name}: task_chunk must be -1 (auto), 0 (all) or a divisor of "
                f"meta_batch_size={trainer.meta_batch_size}, got {self.task_chunk}."
            )

    def tasks(self) -> tuple[Episodes, Episodes]:
        train_data, test_data = self.load_data()
        train = Episodes(train_data, self.train_way or self.n_way, self.k_shot,
                         self.train_query, rotations=self.train_rotations)  # fmt: skip
        test = Episodes(test_data, self.n_way, self.k_shot, self.k_query,
                        rotations=self.test_rotations)  # fmt: skip
        return train, test

    def backbone_model(self, num_classes: int, conv: str, pooled_blocks: int = 4) -> Model:
        """The backbone as pure functions (``num_classes=0``: features; ``pooled_blocks``
        below 4: Conv4's spatial feature maps)."""
        side, _, channels = self.image_shape
        if pooled_blocks < 4:
            if self.backbone != "conv4":
                raise ConfigError(
                    f"Feature maps pooled in {pooled_blocks} blocks need backbone=conv4, got "
                    f"{self.backbone}."
                )
            return self.with_dtype(from_nnx(lambda r: Conv4(
                channels, 0, image_size=side, filters=self.filters, conv=conv,
                pooled_blocks=pooled_blocks, rngs=r)))  # fmt: skip
        if self.backbone == "resnet12":
            return self.with_dtype(
                from_nnx(lambda r: ResNet12(channels, num_classes, conv=conv, rngs=r))
            )
        return self.with_dtype(
            from_nnx(
                lambda r: Conv4(
                    channels, num_classes, image_size=side, filters=self.filters, conv=conv, rngs=r
                )
            )  # fmt: skip
        )

    def conv_and_task_chunk(
        self, backend: str, per_task_weights: bool, meta_batch_size: int
    ) -> tuple[str, int | None]:
        """The convolution and ``task_chunk`` a learner gets on ``backend``, with ``auto``
        (``conv="auto"``, ``task_chunk=-1``) resolved as the class docstring says.

        Example:
          >>> from metajax.config import get_config
          >>> bench = get_config("omniglot-maml").benchmark
          >>> bench.conv_and_task_chunk("cpu", True, 32)[1]  # tasks in turn
          1
          >>> bench.conv_and_task_chunk("gpu", True, 32)
          ('xla', None)
        """
        on_cpu = backend == "cpu"
        task_chunk = self.task_chunk if self.task_chunk >= 0 else (1 if on_cpu else 0)
        task_chunk = min(task_chunk, meta_batch_size) or None
        in_loop = task_chunk is not None and task_chunk < meta_batch_size
        if on_cpu and kernels.available():
            auto_conv = "ffi"  # metajax's C++ kernel: the fastest on CPU in every setting
        else:
            auto_conv = "im2col" if on_cpu and (per_task_weights or in_loop) else "xla"
        return (self.conv if self.conv != "auto" else auto_conv), task_chunk

    def env(self, learner: LearnerConfig, trainer: TrainerConfig, name: str) -> BuildEnv:
        conv, task_chunk = self.conv_and_task_chunk(
            jax.default_backend(), learner.per_task_weights, trainer.meta_batch_size
        )

        def body_and_head() -> tuple[Model, Model]:
            body = self.backbone_model(0, conv)
            features = jax.eval_shape(
                lambda k: body.apply(body.init(k), jax.numpy.zeros((1, *self.image_shape))),
                jax.random.key(0),
            ).shape[-1]
            head = self.with_dtype(from_nnx(lambda r: nnx.Linear(features, self.n_way, rngs=r)))
            return body, head

        # Few steps of a conv net: faster unrolled on CPU (see `metajax.core.inner.adapt`).
        return BuildEnv(
            network=lambda: self.backbone_model(self.n_way, conv),
            features=lambda: self.backbone_model(0, conv),
            body_and_head=body_and_head,
            loss=losses.cross_entropy,
            metric=losses.ACCURACY,
            unroll=True,
            task_chunk=task_chunk,
            config=name,
            feature_maps=lambda: self.backbone_model(0, conv, pooled_blocks=2),
            input_shape=tuple(self.image_shape),
        )


def fewshot_config(
    name: str, benchmark: FewShotBenchmark, description: str = "", **changes: Any
) -> Config:
    """A few-shot config: MAML's Omniglot setting (Finn et al. 2017: inner SGD 0.4, one step,
    three at test, meta-batch 32, Adam 1e-3, 60,000 steps) on ``benchmark``, with ``changes``
    to any part's fields (``algorithm`` among them)."""
    learner = algorithm_config("maml")(inner_lr=0.4, eval_steps=(3,))
    # One step per call: XLA:CPU runs convolutions in a loop body ~15x slower (see trainer).
    trainer = TrainerConfig(steps=60_000, meta_batch_size=32, eval_tasks=600,
                            checkpoint_every=2000, steps_per_dispatch=1)  # fmt: skip
    return Config(name, benchmark, learner, trainer, description).replace(**changes)
