"""Any ``--set`` value is a clear error or a config that builds, traces a meta-step and
evaluates: never a traceback later, after the training run."""

import re

import jax
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from metajax.config import ConfigError, get_config, override
from metajax.training.trainer import init_state, make_meta_step

BASE = get_config("sinusoid-maml")
KEYS = sorted(k.split(" ")[0] for k in BASE.valid_keys().split(", "))

numbers = st.one_of(
    st.integers(-3, 50),
    st.integers(2**62, 2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(["nan", "inf", "-inf", "1e309", "0", "-0.0", "1e-300"]),
)
values = st.one_of(
    numbers.map(str),
    st.lists(st.integers(-2, 40), max_size=3).map(lambda v: ",".join(map(str, v))),
    st.sampled_from(
        ["", " ", "true", "false", "yes", "maml", "adam", "sgd", "float16", "(", "1,,2"]
    ),
    st.text(max_size=6),
)


def _check_usable(config):
    """What training and evaluation do with a config, traced (not run)."""
    experiment = config.build()
    trainer = config.trainer
    state = jax.eval_shape(
        lambda: init_state(experiment.learner, experiment.optimizer, trainer.seed)
    )
    step = make_meta_step(experiment.learner, experiment.train_tasks, trainer.meta_batch_size)
    jax.eval_shape(step, state)

    def evaluate_one(params, key):
        task = experiment.test_tasks.sample(key)
        return experiment.learner.evaluate_task(params, task, key)

    jax.eval_shape(evaluate_one, state.params, jax.random.key(trainer.eval_seed))


@example(assignments=[("hidden", "401142604065065533440")])
@example(assignments=[("steps", str(2**64))])
@example(assignments=[("seed", str(2**64)), ("eval_steps", "")])
@example(assignments=[("inner_lr", "1e309")])
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(assignments=st.lists(st.tuples(st.sampled_from(KEYS), values), min_size=1, max_size=2))
def test_any_set_value_is_a_clear_error_or_a_usable_config(assignments):
    if any(k == "meta_batch_size" and v.strip().isdigit() and int(v) > 64 for k, v in assignments):
        return  # a valid size too large to trace quickly
    try:
        config = override(BASE, [f"{k}={v}" for k, v in assignments])
    except ConfigError as err:
        assert str(err) and "\n" not in str(err).strip()
        return
    _check_usable(config)


@pytest.mark.parametrize(
    "assignment, message",
    [
        ("hidden=", "hidden needs at least one layer width"),
        ("hidden=0", "hidden needs at least one layer width"),
        (f"seed={2**64}", r"seed must be in \[0, 2\*\*63\)"),
        ("inner_lr=nan", "inner_lr must be finite"),
        ("eval_tasks=1", "eval_tasks must be >= 2"),
    ],
)
def test_values_that_used_to_fail_late_fail_at_once(assignment, message, tmp_path, capsys):
    from metajax.cli import main

    argv = ["train", "sinusoid-maml", "--workdir", str(tmp_path / "run"), "--set", assignment]
    assert main(argv) == 2
    assert re.search(message, capsys.readouterr().err)
    assert not (tmp_path / "run").exists()  # nothing written


def test_anil_with_no_hidden_layer_and_an_empty_eval_steps():
    with pytest.raises(ConfigError, match="hidden needs at least one layer"):
        override(get_config("sinusoid-anil"), ["hidden="])
    config = override(BASE, ["eval_steps="])  # empty: the training step count
    _check_usable(config)
    assert config.learner.test_steps() in (None, (config.inner_steps,))
