"""The shared config of N-way K-shot image classification: one algorithm switch (MAML,
first-order MAML, ProtoNet), one backbone switch (Conv4, ResNet12), and the test-time settings.

A benchmark subclasses `FewShotConfig` and supplies its data (`load_data`) and its raw-input
preprocessing (`preprocess`); everything else, from the model to the outer learning-rate
schedule, is built here once. See ``experiments/configs/omniglot.py`` and ``images.py``.
"""

from __future__ import annotations

import dataclasses

import jax
import numpy as np
import optax

from metajax import losses
from metajax.algorithms import MAML, ProtoNet
from metajax.config import BaseConfig, Experiment
from metajax.core.functional import Model, from_nnx
from metajax.datasets.images import ClassImages, to_float
from metajax.models import Conv4, ResNet12
from metajax.models.conv4 import CONV_IMPLS
from metajax.tasks import Episodes

ALGORITHMS = ("maml", "fomaml", "protonet")
BACKBONES = ("conv4", "resnet12")


@dataclasses.dataclass(frozen=True)
class FewShotConfig(BaseConfig):
    """N-way K-shot classification over a class-indexed image data set.

    Attributes:
      algorithm: ``maml``, ``fomaml`` or ``protonet``.
      backbone: ``conv4`` or ``resnet12``.
      filters: Conv4's channels per block.
      data_dir: the folder with the data files (default ``$METAJAX_DATA_DIR`` or
        ~/.cache/metajax).
      n_way, k_shot, k_query: the test episodes (and the training ones unless train_way is set).
      train_way: classes per training episode (ProtoNets train with more); 0 means n_way.
      train_query: query examples per class in training episodes.
      train_rotations: rotated classes as extra training classes.
      test_rotations: rotated classes at test.
      inner_lr, inner_steps, eval_inner_steps: MAML's inner SGD.
      outer_lr: Adam's learning rate.
      lr_halve_every: halve the outer learning rate every this many steps (0: constant).
      conv: the backbone's convolution, ``xla``, ``im2col`` or ``taps`` (same results);
        ``auto`` picks im2col on CPU whenever the tasks run one after another (see
        task_chunk): XLA:CPU's convolution is ~10x slower under ``vmap`` with per-task weights
        and inside a loop body (``benchmarks/RESULTS.md``).
      task_chunk: tasks run together under ``vmap`` (see `metajax.algorithms.map_chunks`);
        0 vmaps the whole meta-batch; -1 (auto) is 1 on CPU (one task at a time keeps each
        task's activations in cache: ProtoNet's meta-batch of 32 ran 1.9x faster), else 0.
    """

    steps: int = 60_000
    meta_batch_size: int = 32
    eval_tasks: int = 600
    checkpoint_every: int = 2000
    # One step per call: XLA:CPU runs convolutions in a loop body ~15x slower (see trainer).
    steps_per_dispatch: int = 1
    log_every: int = 100
    algorithm: str = "maml"
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
    inner_lr: float = 0.4
    inner_steps: int = 1
    eval_inner_steps: int = 3
    outer_lr: float = 1e-3
    lr_halve_every: int = 0
    conv: str = "auto"
    task_chunk: int = -1

    def load_data(self) -> tuple[ClassImages, ClassImages]:
        """``(meta-train, meta-test)`` data; a benchmark's config defines it."""
        raise NotImplementedError(f"{type(self).__name__}.load_data() is not defined.")

    def preprocess(self, raw: np.ndarray) -> jax.Array:
        """Raw inputs (as the data set stores them) to model inputs, exactly as in training
        (used by `metajax.load`). The default: uint8 ``[n, H, W, C]`` to floats in [0, 1]."""
        return to_float(raw)

    def validate(self) -> None:
        super().validate()
        choices = {"algorithm": ALGORITHMS, "backbone": BACKBONES, "conv": ("auto", *CONV_IMPLS)}
        for field, allowed in choices.items():
            if getattr(self, field) not in allowed:
                raise ValueError(
                    f"Config {self.name}: {field} must be one of {', '.join(allowed)}, got "
                    f"{getattr(self, field)!r}."
                )
        if self.task_chunk < -1 or (self.task_chunk > 0 and self.meta_batch_size % self.task_chunk):
            raise ValueError(
                f"Config {self.name}: task_chunk must be -1 (auto), 0 (all) or a divisor of "
                f"meta_batch_size={self.meta_batch_size}, got {self.task_chunk}."
            )
        if self.algorithm != "protonet" and self.train_way not in (0, self.n_way):
            raise ValueError(
                f"Config {self.name}: MAML's head has n_way outputs, so it trains and tests at "
                f"the same way; got train_way={self.train_way}, n_way={self.n_way}."
            )

    def backbone_model(
        self, num_classes: int, image_shape: tuple[int, int, int], conv: str
    ) -> Model:
        """The backbone as pure functions (``num_classes=0``: features) for ``[H, W, C]``
        images."""
        side, channels = image_shape[0], image_shape[-1]
        if self.backbone == "resnet12":
            return self.model(
                from_nnx(lambda r: ResNet12(channels, num_classes, conv=conv, rngs=r))
            )
        return self.model(
            from_nnx(
                lambda r: Conv4(
                    channels, num_classes, image_size=side, filters=self.filters, conv=conv, rngs=r
                )
            )
        )

    def conv_and_task_chunk(self, backend: str) -> tuple[str, int | None]:
        """The convolution and ``task_chunk`` the algorithm gets on ``backend``, with ``auto``
        (``conv="auto"``, ``task_chunk=-1``) resolved as the docstring above says.

        Example:
          >>> from metajax.config import get_config
          >>> get_config("omniglot-maml").conv_and_task_chunk("cpu")
          ('im2col', 1)
          >>> get_config("omniglot-maml").conv_and_task_chunk("gpu")
          ('xla', None)
        """
        on_cpu = backend == "cpu"
        task_chunk = self.task_chunk if self.task_chunk >= 0 else (1 if on_cpu else 0)
        task_chunk = min(task_chunk, self.meta_batch_size) or None
        in_loop = task_chunk is not None and task_chunk < self.meta_batch_size
        maml = self.algorithm != "protonet"
        auto_conv = "im2col" if on_cpu and (maml or in_loop) else "xla"
        return (self.conv if self.conv != "auto" else auto_conv), task_chunk

    def build(self) -> Experiment:
        train_data, test_data = self.load_data()
        shape = train_data.image_shape
        train_tasks = Episodes(
            train_data,
            self.train_way or self.n_way,
            self.k_shot,
            self.train_query,
            rotations=self.train_rotations,
        )
        test_tasks = Episodes(
            test_data, self.n_way, self.k_shot, self.k_query, rotations=self.test_rotations
        )
        maml = self.algorithm != "protonet"
        conv, task_chunk = self.conv_and_task_chunk(jax.default_backend())
        if maml:
            algorithm = MAML(
                self.backbone_model(self.n_way, shape, conv),
                losses.cross_entropy,
                optax.sgd(self.inner_lr),
                inner_steps=self.inner_steps,
                first_order=self.algorithm == "fomaml",
                unroll=True,  # few steps of a conv net: faster unrolled on CPU (see adapt)
                task_chunk=task_chunk,
            )
            eval_steps = (self.eval_inner_steps,)
        else:
            algorithm = ProtoNet(self.backbone_model(0, shape, conv), task_chunk=task_chunk)
            eval_steps = (0,)
        lr = (
            optax.exponential_decay(self.outer_lr, self.lr_halve_every, 0.5, staircase=True)
            if self.lr_halve_every
            else self.outer_lr
        )
        return Experiment(
            algorithm, train_tasks, test_tasks, optax.adam(lr), "accuracy", eval_steps
        )
