"""The shared config of N-way K-shot image classification: one algorithm switch (MAML,
first-order MAML, Reptile, Meta-SGD, ANIL, iMAML, MAML++, ProtoNet), one backbone switch
(Conv4, ResNet12), the outer optimizer's schedule, and the test-time settings.

A benchmark subclasses `FewShotConfig` and supplies its data (`load_data`) and its raw-input
preprocessing (`preprocess`); everything else, from the model to the outer learning-rate
schedule, is built here once. See ``experiments/configs/omniglot.py`` and ``images.py``.
"""

from __future__ import annotations

import dataclasses

import jax
import numpy as np
import optax
from flax import nnx

from metajax import config as config_lib
from metajax import kernels, losses
from metajax.algorithms import ANIL, IMAML, MAML, MAMLPlusPlus, MetaSGD, ProtoNet, Reptile
from metajax.config import BaseConfig, Experiment
from metajax.core.functional import Model, from_nnx
from metajax.datasets.images import ClassImages, to_float
from metajax.models import Conv4, ResNet12
from metajax.models.conv4 import CONV_IMPLS
from metajax.tasks import Episodes

ALGORITHMS = ("maml", "fomaml", "reptile", "metasgd", "anil", "imaml", "mamlpp", "protonet")
LR_SCHEDULES = ("constant", "cosine", "linear")

# The papers' optimizer settings that the Omniglot and mini-ImageNet configs share.
# Reptile (Nichol et al. 2018, Appendix A): inner Adam with beta1 = 0, 50 steps at test, the
# outer step size 1.0 decayed linearly to 0 over 100,000 steps.
REPTILE_SETTINGS = dict(algorithm="reptile", inner_optimizer="adam", inner_lr=1e-3,
                        eval_inner_steps=50, outer_optimizer="sgd", outer_lr=1.0,
                        lr_schedule="linear", steps=100_000)  # fmt: skip
# MAML++ (Antoniou et al. 2019): 5 steps at test, 100 epochs of 500 meta-steps, multi-step loss
# over the first 15 epochs, first order for the first 50, cosine outer rate down to 1e-5.
MAMLPP_SETTINGS = dict(algorithm="mamlpp", eval_inner_steps=5, steps=50_000,
                       msl_anneal_steps=7500, first_order_steps=25_000, lr_schedule="cosine",
                       min_outer_lr=1e-5)  # fmt: skip
BACKBONES = ("conv4", "resnet12")


@dataclasses.dataclass(frozen=True)
class FewShotConfig(BaseConfig):
    """N-way K-shot classification over a class-indexed image data set.

    Attributes:
      algorithm: ``maml``, ``fomaml``, ``reptile``, ``metasgd``, ``anil``, ``imaml``,
        ``mamlpp`` or ``protonet``.
      backbone: ``conv4`` or ``resnet12``.
      filters: Conv4's channels per block.
      data_dir: the folder with the data files (default ``$METAJAX_DATA_DIR`` or
        ~/.cache/metajax).
      n_way, k_shot, k_query: the test episodes (and the training ones unless train_way is set).
      train_way: classes per training episode (ProtoNets train with more); 0 means n_way.
      train_query: query examples per class in training episodes.
      train_rotations: rotated classes as extra training classes.
      test_rotations: rotated classes at test.
      inner_lr, inner_steps, eval_inner_steps: the inner loop (Meta-SGD's and MAML++'s
        initial learned rates are inner_lr).
      inner_optimizer: ``sgd``, ``adam`` (Reptile's paper: Adam with beta1 = 0), or for
        iMAML and Reptile a line-search solver, ``sgd_linesearch`` or ``lbfgs``
        (`metajax.config.inner_optimizer`).
      outer_optimizer: ``adam`` or ``sgd`` (Reptile's ``theta += eps (W - theta)`` is SGD
        with rate eps on its pseudo-gradient).
      outer_lr: the outer optimizer's learning rate.
      lr_halve_every: halve the outer learning rate every this many steps (0: never).
      lr_schedule: ``constant`` (with lr_halve_every), ``cosine`` (to min_outer_lr at the last
        step, MAML++) or ``linear`` (to min_outer_lr, Reptile).
      min_outer_lr: the cosine or linear schedule's final rate.
      transductive: Reptile's evaluation setting (see `metajax.algorithms.Reptile`).
      imaml_lambda, cg_steps, cg_damping: iMAML's proximal strength and conjugate gradient.
      multi_step_loss, msl_anneal_steps, first_order_steps, per_step_bn, lslr: MAML++'s
        switches (see `metajax.algorithms.MAMLPlusPlus`); ``mamlpp`` with all of them off
        and lr_schedule constant is MAML.
      conv: the backbone's convolution, ``ffi``, ``xla``, ``im2col`` or ``taps`` (same
        results); ``auto`` picks metajax's C++ kernel (``ffi``, `metajax.models.ffi_conv`) on
        CPU, and where it cannot be built, im2col whenever the tasks run one after another
        (see task_chunk): XLA:CPU's convolution is ~10x slower under ``vmap`` with per-task
        weights and inside a loop body (``benchmarks/RESULTS.md``). XLA's on GPU/TPU.
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
    inner_optimizer: str = "sgd"
    outer_optimizer: str = "adam"
    outer_lr: float = 1e-3
    lr_halve_every: int = 0
    lr_schedule: str = "constant"
    min_outer_lr: float = 0.0
    transductive: bool = True
    imaml_lambda: float = 2.0
    cg_steps: int = 5
    cg_damping: float = 0.0
    multi_step_loss: bool = True
    msl_anneal_steps: int = 500
    first_order_steps: int = 0
    per_step_bn: bool = True
    lslr: bool = True
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
        choices = {
            "algorithm": ALGORITHMS,
            "backbone": BACKBONES,
            "conv": ("auto", *CONV_IMPLS),
            "inner_optimizer": config_lib.INNER_OPTIMIZERS,
            "outer_optimizer": ("adam", "sgd"),
            "lr_schedule": LR_SCHEDULES,
        }
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
          >>> get_config("omniglot-maml").conv_and_task_chunk("cpu")[1]  # tasks in turn
          1
          >>> get_config("omniglot-maml").conv_and_task_chunk("gpu")
          ('xla', None)
        """
        on_cpu = backend == "cpu"
        task_chunk = self.task_chunk if self.task_chunk >= 0 else (1 if on_cpu else 0)
        task_chunk = min(task_chunk, self.meta_batch_size) or None
        in_loop = task_chunk is not None and task_chunk < self.meta_batch_size
        maml = self.algorithm != "protonet"
        if on_cpu and kernels.available():
            auto_conv = "ffi"  # metajax's C++ kernel: the fastest on CPU in every setting
        else:
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
        conv, task_chunk = self.conv_and_task_chunk(jax.default_backend())
        if self.algorithm == "protonet":
            algorithm = ProtoNet(self.backbone_model(0, shape, conv), task_chunk=task_chunk)
            eval_steps = (0,)
        else:
            algorithm = self.gradient_algorithm(shape, conv, task_chunk)
            eval_steps = (self.eval_inner_steps,)
        outer = optax.adam if self.outer_optimizer == "adam" else optax.sgd
        return Experiment(
            algorithm, train_tasks, test_tasks, outer(self.outer_lr_schedule()), "accuracy",
            eval_steps,
        )  # fmt: skip

    def outer_lr_schedule(self) -> optax.ScalarOrSchedule:
        """The outer learning rate: constant, halved every ``lr_halve_every`` steps, or a
        cosine or linear decay to ``min_outer_lr`` over ``steps``.

        Example:
          >>> from metajax.config import get_config, override
          >>> config = override(get_config("omniglot-maml"), ["lr_schedule=cosine", "steps=10"])
          >>> schedule = config.outer_lr_schedule()
          >>> [round(float(schedule(s)), 6) for s in (0, 5, 10)]
          [0.001, 0.0005, 0.0]
        """
        if self.lr_schedule == "cosine":
            alpha = self.min_outer_lr / self.outer_lr
            return optax.cosine_decay_schedule(self.outer_lr, self.steps, alpha=alpha)
        if self.lr_schedule == "linear":
            return optax.linear_schedule(self.outer_lr, self.min_outer_lr, self.steps)
        if self.lr_halve_every:
            return optax.exponential_decay(self.outer_lr, self.lr_halve_every, 0.5, staircase=True)
        return self.outer_lr

    def gradient_algorithm(
        self, image_shape: tuple[int, int, int], conv: str, task_chunk: int | None
    ):
        """The gradient-based algorithm this config names, on its backbone."""
        inner = config_lib.inner_optimizer(
            self.inner_optimizer, self.inner_lr, algorithm=self.algorithm, config=self.name
        )
        # Few steps of a conv net: faster unrolled on CPU (see `metajax.core.inner.adapt`).
        common = dict(loss=losses.cross_entropy, inner_steps=self.inner_steps, unroll=True,
                      task_chunk=task_chunk)  # fmt: skip
        if self.algorithm == "anil":
            body = self.backbone_model(0, image_shape, conv)
            features = jax.eval_shape(
                lambda k: body.apply(body.init(k), jax.numpy.zeros((1, *image_shape))),
                jax.random.key(0),
            ).shape[-1]
            head = self.model(from_nnx(lambda r: nnx.Linear(features, self.n_way, rngs=r)))
            return ANIL(body, head, inner_optimizer=inner, **common)
        model = self.backbone_model(self.n_way, image_shape, conv)
        if self.algorithm in ("maml", "fomaml"):
            return MAML(model, inner_optimizer=inner, first_order=self.algorithm == "fomaml",
                        **common)  # fmt: skip
        if self.algorithm == "reptile":
            return Reptile(model, inner_optimizer=inner, transductive=self.transductive, **common)
        if self.algorithm == "metasgd":
            return MetaSGD(model, alpha_init=self.inner_lr, **common)
        if self.algorithm == "imaml":
            return IMAML(model, inner_optimizer=inner, lam=self.imaml_lambda,
                         cg_steps=self.cg_steps, cg_damping=self.cg_damping, **common)  # fmt: skip
        return MAMLPlusPlus(
            model,
            inner_optimizer=inner,
            multi_step_loss=self.multi_step_loss,
            msl_anneal_steps=self.msl_anneal_steps,
            first_order_steps=self.first_order_steps,
            per_step_bn=self.per_step_bn,
            lslr=self.lslr,
            lslr_init=self.inner_lr,
            **common,
        )
