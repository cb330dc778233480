"""Few-shot Omniglot: MAML (Finn et al. 2017, 5.2), first-order MAML and Prototypical
Networks (Snell et al. 2017), on the standard splits and on the Omniglot Challenge's minimal
setting.

Paper settings:
  - MAML: 5-way 1-shot, Conv4 with transductive batch norm, meta-batch 32, one inner SGD step
    of 0.4 at training and 3 at test, Adam 1e-3, 60,000 meta-steps, `vinyals` split with
    rotations. 15 query examples per class.
  - ProtoNets: Conv4, one episode per step with a higher training way (60 classes, 5
    queries), Adam 1e-3 halved every 2,000 episodes, `vinyals` split with rotations.

``omniglot-minimal-*`` meta-train on ``images_background_small1`` (5 alphabets, with the four
rotations as extra classes) and meta-test on the 3 alphabets of small2 that small1 lacks,
without rotations: sized to finish in under 30 minutes on a 2-core CPU.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import optax

from metajax import MAML, BaseConfig, Experiment, from_nnx, losses
from metajax.algorithms import ProtoNet
from metajax.datasets import omniglot
from metajax.datasets.images import to_float
from metajax.models import Conv4
from metajax.models.conv4 import CONV_IMPLS
from metajax.tasks import Episodes


@dataclasses.dataclass(frozen=True)
class OmniglotConfig(BaseConfig):
    """N-way K-shot Omniglot.

    Attributes:
      algorithm: ``maml``, ``fomaml`` or ``protonet``.
      split: ``vinyals``, ``lake``, ``minimal1`` or ``minimal2``.
      data_dir: the folder with the archives (default ``$METAJAX_DATA_DIR`` or ~/.cache/metajax).
      n_way, k_shot, k_query: the test episodes (and the training ones unless train_way is set).
      train_way: classes per training episode (ProtoNets train with more); 0 means n_way.
      train_query: query examples per class in training episodes.
      image_size: images are resized to this square.
      train_rotations: rotated classes as extra training classes.
      test_rotations: rotated classes at test.
      inner_lr, inner_steps, eval_inner_steps: MAML's inner SGD.
      outer_lr: Adam's learning rate.
      lr_halve_every: halve the outer learning rate every this many steps (0: constant).
      conv: Conv4's convolution, ``xla`` or ``im2col`` (same results); ``auto`` picks im2col
        for MAML on CPU, where per-task weights make XLA's convolution ~10x slower.
      task_chunk: tasks run together under ``vmap`` (see `metajax.algorithms.map_chunks`);
        0 vmaps the whole meta-batch; -1 (auto) is 1 for MAML on CPU, else 0.
    """

    steps: int = 60_000
    meta_batch_size: int = 32
    eval_tasks: int = 600
    checkpoint_every: int = 2000
    # One step per call: XLA:CPU runs convolutions in a loop body ~15x slower (see trainer).
    steps_per_dispatch: int = 1
    log_every: int = 100
    algorithm: str = "maml"
    split: str = "vinyals"
    data_dir: str = ""
    n_way: int = 5
    k_shot: int = 1
    k_query: int = 15
    train_way: int = 0
    train_query: int = 15
    image_size: int = 28
    train_rotations: bool = True
    test_rotations: bool = True
    inner_lr: float = 0.4
    inner_steps: int = 1
    eval_inner_steps: int = 3
    outer_lr: float = 1e-3
    lr_halve_every: int = 0
    conv: str = "auto"
    task_chunk: int = -1

    def preprocess(self, raw):
        """Raw archive images to model inputs, exactly as in training (for `metajax.load`)."""
        return to_float(omniglot.preprocess(raw, self.image_size))

    def validate(self) -> None:
        super().validate()
        if self.algorithm not in ("maml", "fomaml", "protonet"):
            raise ValueError(
                f"Config {self.name}: algorithm must be maml, fomaml or protonet, got {self.algorithm!r}."
            )
        if self.conv not in ("auto", *CONV_IMPLS):
            raise ValueError(
                f"Config {self.name}: conv must be auto or one of {sorted(CONV_IMPLS)}, "
                f"got {self.conv!r}."
            )
        if self.task_chunk < -1 or (self.task_chunk > 0 and self.meta_batch_size % self.task_chunk):
            raise ValueError(
                f"Config {self.name}: task_chunk must be -1 (auto), 0 (all) or a divisor of "
                f"meta_batch_size={self.meta_batch_size}, got {self.task_chunk}."
            )
        if self.split not in omniglot.SPLITS:
            raise ValueError(
                f"Config {self.name}: split must be one of {omniglot.SPLITS}, got {self.split!r}."
            )

    def build(self) -> Experiment:
        train_data, test_data = omniglot.load_split(
            self.split, self.data_dir or None, self.image_size
        )
        train_way = self.train_way or self.n_way
        train_tasks = Episodes(
            train_data, train_way, self.k_shot, self.train_query, rotations=self.train_rotations
        )
        test_tasks = Episodes(
            test_data, self.n_way, self.k_shot, self.k_query, rotations=self.test_rotations
        )
        maml = self.algorithm != "protonet"
        on_cpu = jax.default_backend() == "cpu"
        conv = self.conv if self.conv != "auto" else ("im2col" if maml and on_cpu else "xla")
        task_chunk = self.task_chunk if self.task_chunk >= 0 else (1 if maml and on_cpu else 0)
        task_chunk = min(task_chunk, self.meta_batch_size) or None
        if self.algorithm == "protonet":
            algorithm = ProtoNet(
                from_nnx(lambda r: Conv4(1, 0, image_size=self.image_size, conv=conv, rngs=r)),
                task_chunk=task_chunk,
            )
            eval_steps = (0,)
        else:
            # The head has n_way outputs: MAML trains and tests at the same way.
            if train_way != self.n_way:
                raise ValueError(
                    f"Config {self.name}: MAML needs train_way == n_way, got {train_way} and {self.n_way}."
                )
            algorithm = MAML(
                from_nnx(
                    lambda r: Conv4(1, self.n_way, image_size=self.image_size, conv=conv, rngs=r)
                ),
                losses.cross_entropy,
                optax.sgd(self.inner_lr),
                inner_steps=self.inner_steps,
                first_order=self.algorithm == "fomaml",
                unroll=True,
                task_chunk=task_chunk,
            )
            eval_steps = (self.eval_inner_steps,)
        lr = (
            optax.exponential_decay(self.outer_lr, self.lr_halve_every, 0.5, staircase=True)
            if self.lr_halve_every
            else self.outer_lr
        )
        return Experiment(
            algorithm,
            train_tasks,
            test_tasks,
            optax.adam(lr),
            metric="accuracy",
            eval_steps=eval_steps,
        )


CONFIGS = {
    "omniglot-maml": OmniglotConfig,
    "omniglot-fomaml": functools.partial(OmniglotConfig, algorithm="fomaml"),
    "omniglot-protonet": functools.partial(
        OmniglotConfig,
        algorithm="protonet",
        meta_batch_size=1,
        train_way=60,
        train_query=5,
        lr_halve_every=2000,
        steps=20_000,
    ),
    # Minimal setting, sized for a 2-core CPU: 20-way training episodes (0.19 s a step here,
    # against 0.61 s at 60-way) and a faster learning-rate schedule.
    "omniglot-minimal-protonet": functools.partial(
        OmniglotConfig,
        algorithm="protonet",
        split="minimal1",
        meta_batch_size=1,
        train_way=20,
        train_query=5,
        lr_halve_every=1000,
        steps=3000,
        test_rotations=False,
    ),
    # 4 tasks a step, each in turn (task_chunk auto = 1 on CPU), ~0.65 s a step here.
    "omniglot-minimal-fomaml": functools.partial(
        OmniglotConfig,
        algorithm="fomaml",
        split="minimal1",
        meta_batch_size=4,
        steps=2000,
        test_rotations=False,
    ),
}
