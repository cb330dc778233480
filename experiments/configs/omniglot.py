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

from metajax.datasets import omniglot
from metajax.datasets.images import to_float
from metajax.fewshot import FewShotConfig


@dataclasses.dataclass(frozen=True)
class OmniglotConfig(FewShotConfig):
    """N-way K-shot Omniglot (fields of `metajax.fewshot.FewShotConfig`, and):

    Attributes:
      split: ``vinyals``, ``lake``, ``minimal1`` or ``minimal2``.
      image_size: images are resized to this square.
    """

    split: str = "vinyals"
    image_size: int = 28
    train_rotations: bool = True
    test_rotations: bool = True

    def preprocess(self, raw):
        """Raw archive images to model inputs, exactly as in training (for `metajax.load`)."""
        return to_float(omniglot.preprocess(raw, self.image_size))

    def validate(self) -> None:
        super().validate()
        if self.split not in omniglot.SPLITS:
            raise ValueError(
                f"Config {self.name}: split must be one of {omniglot.SPLITS}, got {self.split!r}."
            )

    def load_data(self):
        return omniglot.load_split(self.split, self.data_dir or None, self.image_size)


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
