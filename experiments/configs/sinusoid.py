"""Sinusoid regression (Finn, Abbeel and Levine, ICML 2017, section 5.1).

Paper settings: K=10 support points, meta-batch 25, an MLP with two hidden layers of 40 ReLU
units, one inner SGD step with alpha=0.01, Adam with beta=1e-3 as the meta-optimizer, 70,000
meta-steps. Evaluation fine-tunes with the same inner SGD on K points and reports the MSE on
query points after 0, 1 and 10 steps. ``sinusoid-pretrained`` is the paper's baseline: the same
network trained on all tasks jointly, then fine-tuned the same way.
"""

from __future__ import annotations

import dataclasses
import functools

import optax

from metajax import MAML, BaseConfig, Experiment, Pretrained, Sinusoid, from_nnx, losses
from metajax.models import MLP

ALGORITHMS = {"maml": MAML, "fomaml": MAML, "pretrained": Pretrained}


@dataclasses.dataclass(frozen=True)
class SinusoidConfig(BaseConfig):
    """Sinusoid regression with MAML, first-order MAML, or the pretrained baseline.

    Attributes:
      algorithm: ``maml``, ``fomaml`` or ``pretrained``.
      k_shot: support points per task (K).
      k_query: query points per training task.
      eval_query: query points per test task.
      hidden: hidden layer widths.
      inner_lr: the inner SGD step size (alpha), also used to fine-tune at test time.
      inner_steps: inner steps during meta-training.
      outer_lr: Adam's learning rate (beta).
      remat: checkpoint each inner step (memory flat in inner_steps).
    """

    steps: int = 70_000
    meta_batch_size: int = 25
    algorithm: str = "maml"
    k_shot: int = 10
    k_query: int = 10
    eval_query: int = 100
    hidden: tuple[int, ...] = (40, 40)
    inner_lr: float = 0.01
    inner_steps: int = 1
    outer_lr: float = 1e-3
    remat: bool = False
    eval_steps: tuple[int, ...] = (0, 1, 10)

    def validate(self) -> None:
        super().validate()
        if self.algorithm not in ALGORITHMS:
            raise ValueError(
                f"Config {self.name}: algorithm must be one of {sorted(ALGORITHMS)}, "
                f"got {self.algorithm!r}."
            )

    def build(self) -> Experiment:
        model = self.model(from_nnx(lambda rngs: MLP(1, 1, self.hidden, rngs=rngs)))
        algorithm = ALGORITHMS[self.algorithm](
            model=model,
            loss=losses.mse,
            inner_optimizer=optax.sgd(self.inner_lr),
            inner_steps=self.inner_steps,
            first_order=self.algorithm == "fomaml",
            remat=self.remat,
        )
        return Experiment(
            algorithm=algorithm,
            train_tasks=Sinusoid(k_shot=self.k_shot, k_query=self.k_query),
            test_tasks=Sinusoid(k_shot=self.k_shot, k_query=self.eval_query),
            optimizer=optax.adam(self.outer_lr),
            metric="mse",
            eval_steps=self.eval_steps,
        )


CONFIGS = {
    "sinusoid-maml": SinusoidConfig,
    "sinusoid-fomaml": functools.partial(SinusoidConfig, algorithm="fomaml"),
    # The paper fine-tunes its pretrained baseline with step 0.02 at K=10 (Figure 3).
    "sinusoid-pretrained": functools.partial(SinusoidConfig, algorithm="pretrained", inner_lr=0.02),
}
