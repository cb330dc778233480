"""The trainer: dispatch equivalence, learning, NaN stop, resume, config clashes."""

import dataclasses
import json

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import metajax
from metajax import MAML, Sinusoid, from_nnx, losses
from metajax.config import get_config, override
from metajax.core.inner import InnerLoop
from metajax.models import MLP
from metajax.training import checkpoint
from metajax.training.trainer import (
    NonFiniteLossError,
    init_state,
    make_meta_step,
    make_train_fn,
    run_config,
    train,
)


def _maml():
    return MAML(
        from_nnx(lambda r: MLP(1, 1, (16,), rngs=r)), losses.mse, InnerLoop(optax.sgd(0.01))
    )


def _small(**changes):
    cfg = get_config("sinusoid-maml")
    cfg = override(cfg, ["hidden=16,16", "eval_tasks=50", "meta_batch_size=4"])
    return cfg.replace(**changes)


def test_k_steps_per_dispatch_equals_k_single_steps():
    maml, opt = _maml(), optax.adam(1e-2)
    step = make_meta_step(maml, Sinusoid(), meta_batch_size=5)
    run = make_train_fn(step)
    a = run(init_state(maml, opt, seed=3), 8)[0]
    b = init_state(maml, opt, seed=3)
    for _ in range(8):
        b = run(b, 1)[0]
    assert int(a.step) == int(b.step) == 8
    chex.assert_trees_all_close(a.params, b.params, rtol=1e-5, atol=1e-6)


def test_meta_step_samples_a_new_batch_each_step_and_learns():
    maml = MAML(from_nnx(lambda r: MLP(1, 1, rngs=r)), losses.mse, InnerLoop(optax.sgd(0.01)))
    opt = optax.adam(1e-3)
    run = make_train_fn(make_meta_step(maml, Sinusoid(), meta_batch_size=25))
    state, metrics = run(init_state(maml, opt, seed=0), 1500)
    losses_ = np.asarray(metrics["meta_loss"])
    assert losses_.shape == (1500,)
    assert len(np.unique(losses_[:10])) == 10  # fresh tasks every step
    assert losses_[-200:].mean() < 0.5 * losses_[:100].mean()
    assert bool(metrics["finite"].all())


def _nan_from_step(step: int) -> optax.GradientTransformation:
    """Adam whose updates turn NaN from outer step ``step`` on."""
    adam = optax.adam(1e-3)

    def update(grads, state, params=None):
        adam_state, count = state
        updates, adam_state = adam.update(grads, adam_state, params)
        poison = jnp.where(count >= step, jnp.nan, 1.0)
        return jax.tree.map(lambda u: u * poison, updates), (adam_state, count + 1)

    return optax.GradientTransformation(lambda p: (adam.init(p), jnp.zeros((), jnp.int32)), update)


def test_nan_stops_the_run_and_keeps_the_last_good_checkpoint(tmp_path):
    cfg = _small(steps=400, checkpoint_every=10, steps_per_dispatch=5, log_every=5)
    experiment = dataclasses.replace(cfg.build(), optimizer=_nan_from_step(43))
    with pytest.raises(NonFiniteLossError, match=r"NaN/Inf at step 43 .*kept \(step 40 in"):
        train(cfg, tmp_path, experiment=experiment)
    target = init_state(experiment.learner, experiment.optimizer, cfg.seed)
    step, state = checkpoint.restore(tmp_path / "checkpoints", target)
    assert step == int(state.step) == 40
    assert all(bool(jnp.isfinite(x).all()) for x in jax.tree.leaves(state.params))
    logged = [json.loads(ln) for ln in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert logged[-1]["step"] == 40 and all(np.isfinite(r["meta_loss"]) for r in logged)


def test_workdir_of_another_config_is_refused(tmp_path):
    train(_small(steps=4, steps_per_dispatch=2), tmp_path)
    with pytest.raises(ValueError, match="different config.*seed"):
        train(_small(steps=4, steps_per_dispatch=2, seed=5), tmp_path)


def test_resume_continues_from_checkpoint_and_extends_steps(tmp_path):
    cfg = _small(steps=20, steps_per_dispatch=5, checkpoint_every=10)
    full = train(cfg, tmp_path / "full")
    train(cfg.replace(steps=10), tmp_path / "split")
    resumed = train(cfg, tmp_path / "split")
    chex.assert_trees_all_equal(full.params, resumed.params)
    logged = [
        json.loads(ln)["step"] for ln in (tmp_path / "split/metrics.jsonl").read_text().splitlines()
    ]
    assert logged == sorted(set(logged))


@pytest.mark.slow
def test_public_api_exports():
    import types

    for name in ("MAML", "train", "evaluate", "from_nnx", "Sinusoid", "adapt", "InnerLoop",
                 "save_state", "restore_state", "register_config", "load"):  # fmt: skip
        assert hasattr(metajax, name)
    # Every name of the README's library table.
    for name in ("ProtoNet", "MLP", "Conv4", "ResNet12", "ClassImages", "Episodes", "ffi_conv",
                 "resolve_conv"):  # fmt: skip
        assert hasattr(metajax, name), name
    assert callable(metajax.train) and isinstance(metajax.training, types.ModuleType)


def test_extending_a_scheduled_run_keeps_its_schedule(tmp_path):
    cfg = _small(steps=10, steps_per_dispatch=5, lr_schedule="cosine", outer_lr=1e-2)
    train(cfg, tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["trainer"]["schedule_steps"] == 10  # the horizon is fixed when the run starts
    longer = run_config(cfg.replace(steps=20), tmp_path)
    assert longer.trainer.schedule_steps == 10 and longer.steps == 20
    planned = cfg.replace(schedule_steps=10).trainer.outer_lr_schedule()
    extended = longer.trainer.outer_lr_schedule()
    for step in (0, 5, 9, 10, 15):
        assert float(extended(step)) == float(planned(step))
    train(cfg.replace(steps=20), tmp_path)
    assert json.loads((tmp_path / "config.json").read_text())["trainer"]["steps"] == 20
    # Another horizon is another run.
    with pytest.raises(ValueError, match="trainer.schedule_steps"):
        train(cfg.replace(steps=20, schedule_steps=20), tmp_path)


def test_a_lower_steps_on_a_finished_run_does_not_rewrite_its_config(tmp_path):
    train(_small(steps=10, steps_per_dispatch=5), tmp_path)
    before = (tmp_path / "config.json").read_text()
    state = train(_small(steps=4, steps_per_dispatch=5), tmp_path)
    assert int(state.step) == 10 and (tmp_path / "config.json").read_text() == before


def test_a_non_finite_step_through_the_api_is_loud():
    maml, opt = _maml(), _nan_from_step(3)
    train_fn = make_train_fn(make_meta_step(maml, Sinusoid(), meta_batch_size=4))
    with pytest.raises(NonFiniteLossError, match="at step 3") as err:
        train_fn(init_state(maml, opt, seed=0), 50)
    assert err.value.step == 3 and int(err.value.state.step) == 3
    assert all(bool(jnp.isfinite(x).all()) for x in jax.tree.leaves(err.value.state.params))
    # Without the check the failed step is retried, and metrics say so.
    quiet = make_train_fn(make_meta_step(maml, Sinusoid(), meta_batch_size=4), check_finite=False)
    state, metrics = quiet(init_state(maml, opt, seed=0), 6)
    assert int(state.step) == 3 and metrics["finite"].tolist() == [True] * 3 + [False] * 3


def test_donation_is_optional():
    maml, opt = _maml(), optax.adam(1e-3)
    keep = make_train_fn(make_meta_step(maml, Sinusoid(), meta_batch_size=4), donate=False)
    state = init_state(maml, opt, seed=0)
    keep(state, 2)
    assert int(state.step) == 0 and not jax.tree.leaves(state.params)[0].is_deleted()
    donate = make_train_fn(make_meta_step(maml, Sinusoid(), meta_batch_size=4))
    donate(state, 2)
    assert jax.tree.leaves(state.params)[0].is_deleted()


def test_user_registered_configs_train_and_load(tmp_path):
    from metajax.config import ConfigError, register_config, unregister_config

    mine = get_config("sinusoid-maml").replace(steps=6, steps_per_dispatch=3, hidden=(8,))
    mine = dataclasses.replace(mine, name="my-api-run")
    train(mine, tmp_path / "api")
    # Trained from the API with an unregistered config: open it with its experiment.
    with pytest.raises(ConfigError, match="Unknown config 'my-api-run'"):
        metajax.load(tmp_path / "api")
    learner = metajax.load(tmp_path / "api", experiment=mine.build())
    assert learner.config is None and jax.tree.leaves(learner.params)
    register_config("my-api-run", mine)
    try:
        assert metajax.load(tmp_path / "api").config == mine.replace(schedule_steps=0)
    finally:
        unregister_config("my-api-run")
