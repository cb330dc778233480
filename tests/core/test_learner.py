"""The learner protocol: a learner that overrides the whole meta-step (several optax updates,
its own state in ``extra``) trains under the same trainer, checkpoints and resumes bitwise."""

from __future__ import annotations

import dataclasses
import json

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from metajax import losses
from metajax.algorithms.base import FastWeights
from metajax.config import (
    Config,
    LearnerConfig,
    TrainerConfig,
    register_algorithm,
    unregister_algorithm,
)
from metajax.configs.sinusoid import SinusoidBenchmark
from metajax.core.learner import MetaLearner, TrainState, apply_meta_gradient
from metajax.core.types import sample_tasks
from metajax.training.trainer import NonFiniteLossError, init_state, load_state, train


@dataclasses.dataclass(frozen=True)
class EpochLearner(MetaLearner):
    """Joint training with ``epochs`` optax updates per meta-step, each on half the tasks
    (PPO's epochs x minibatches), and a running mean of the loss in ``extra``."""

    model: object
    epochs: int = 3

    def init(self, key):
        return self.model.init(key)

    def init_extra(self, params):
        return {"loss_ema": jnp.zeros(()), "updates": jnp.zeros((), jnp.int32)}

    def task_loss(self, params, task):
        x = jnp.concatenate([task.support.x, task.query.x])
        y = jnp.concatenate([task.support.y, task.query.y])
        return losses.mse(self.model.apply(params, x), y)

    def update(self, state: TrainState, tasks, key):
        half = jax.tree.leaves(tasks)[0].shape[0] // 2

        def epoch(carry, i):
            state, _ = carry
            minibatch = jax.tree.map(
                lambda a: jax.lax.dynamic_slice_in_dim(a, (i % 2) * half, half), tasks
            )
            loss, grads = jax.value_and_grad(
                lambda p: jax.vmap(self.task_loss, in_axes=(None, 0))(p, minibatch).mean()
            )(state.params)
            state, metrics = apply_meta_gradient(state, grads, {"meta_loss": loss})
            return (state, metrics), None

        start = {"meta_loss": jnp.zeros(()), "grad_norm": jnp.zeros(()), "finite": jnp.array(True)}
        (state, metrics), _ = jax.lax.scan(epoch, (state, start), jnp.arange(self.epochs))
        ema = 0.9 * state.extra["loss_ema"] + 0.1 * metrics["meta_loss"]
        extra = {"loss_ema": ema, "updates": state.extra["updates"] + self.epochs}
        return state.replace(extra=extra), {**metrics, "loss_ema": ema}

    def adapt(self, params, context, key=None, *, steps=None):
        return FastWeights(params)

    def predict(self, adapted, x, key=None):
        return self.model.apply(adapted.params, x)

    def evaluate_task(self, params, task, key):
        return {"mse": losses.mse(self.model.apply(params, task.query.x), task.query.y)}


@pytest.fixture
def epoch_config():
    @register_algorithm("test-epochs")
    @dataclasses.dataclass(frozen=True)
    class EpochConfig(LearnerConfig):
        """Joint training, several updates a meta-step (a test learner)."""

        epochs: int = 3

        def build(self, env):
            return EpochLearner(env.network(), self.epochs)

    trainer = TrainerConfig(steps=300, meta_batch_size=8, steps_per_dispatch=50,
                            checkpoint_every=100, eval_tasks=20, outer_lr=3e-3)  # fmt: skip
    yield Config("test-epochs-run", SinusoidBenchmark(hidden=(16,)), EpochConfig(), trainer)
    unregister_algorithm("test-epochs")


def test_a_learner_with_its_own_update_trains_under_the_trainer(epoch_config, tmp_path):
    state = train(epoch_config, tmp_path / "whole")
    assert int(state.step) == 300
    assert int(state.extra["updates"]) == 3 * 300  # three optax steps per meta-step
    assert int(state.opt_state[0].count) == 3 * 300
    logged = [json.loads(ln) for ln in (tmp_path / "whole/metrics.jsonl").read_text().splitlines()]
    assert "loss_ema" in logged[-1] and logged[-1]["step"] == 300
    # It learned: the joint loss on fresh tasks fell (towards the paper's pretrained 3.2).
    experiment = epoch_config.build()
    tasks = sample_tasks(experiment.train_tasks, jax.random.key(9), 512)
    initial = init_state(experiment.learner, experiment.optimizer, 0).params
    loss = jax.vmap(experiment.learner.task_loss, in_axes=(None, 0))
    assert float(loss(state.params, tasks).mean()) < 0.85 * float(loss(initial, tasks).mean())
    # Resumed from its checkpoint at step 100, the run ends bitwise where the whole one did,
    # its learner-owned state included.
    train(epoch_config.replace(steps=100), tmp_path / "split")
    resumed = train(epoch_config, tmp_path / "split")
    for a, b in zip(jax.tree.leaves(resumed), jax.tree.leaves(state), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    # A run trained from the API with an unregistered config opens with its config.
    run, experiment, loaded = load_state(tmp_path / "split", config=epoch_config)
    assert run.name == "test-epochs-run" and int(loaded.extra["updates"]) == 900


def test_a_non_finite_extra_is_not_applied(epoch_config, tmp_path):
    from metajax.training.trainer import make_meta_step, make_train_fn

    experiment = epoch_config.build()
    learner = dataclasses.replace(experiment.learner, epochs=1)

    class Poisoned(EpochLearner):
        def update(self, state, tasks, key):
            state, metrics = super().update(state, tasks, key)
            bad = jnp.where(state.step >= 2, jnp.nan, 0.0)
            return state.replace(
                extra={**state.extra, "loss_ema": state.extra["loss_ema"] + bad}
            ), metrics

    poisoned = Poisoned(learner.model, 1)
    train_fn = make_train_fn(make_meta_step(poisoned, experiment.train_tasks, 4))
    state = init_state(poisoned, optax.adam(1e-3), seed=0)
    with pytest.raises(NonFiniteLossError, match="at step 2") as err:
        train_fn(state, 5)
    assert int(err.value.state.step) == 2 and bool(jnp.isfinite(err.value.state.extra["loss_ema"]))
