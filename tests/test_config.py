"""Configs: registry, --set overrides, round trip through config.json."""

import pytest

from metajax.config import ConfigError, available_configs, from_dict, get_config, override, to_dict


def test_named_configs_have_the_paper_settings():
    cfg = get_config("sinusoid-maml")
    assert (
        cfg.k_shot,
        cfg.meta_batch_size,
        cfg.inner_lr,
        cfg.inner_steps,
        cfg.outer_lr,
        cfg.steps,
    ) == (10, 25, 0.01, 1, 1e-3, 70_000)
    assert cfg.hidden == (40, 40)
    assert get_config("sinusoid-fomaml").algorithm == "fomaml"
    assert get_config("sinusoid-pretrained").algorithm == "pretrained"
    for name in available_configs():
        c = get_config(name)
        assert {"steps", "seed", "meta_batch_size"} <= set(to_dict(c)["trainer"])
        assert c.name == name and c.description


def test_override_converts_types():
    cfg = override(
        get_config("sinusoid-maml"), ["steps=2000", "inner_lr=0.5", "remat=true", "hidden=8,8,8"]
    )
    assert (cfg.steps, cfg.inner_lr, cfg.remat, cfg.hidden) == (2000, 0.5, True, (8, 8, 8))


@pytest.mark.parametrize(
    "assignment, message",
    [
        ("stepz=3", r"Unknown config key 'stepz'.*Valid keys: .*steps \(int\)"),
        ("steps=many", r"Bad value 'many' for steps.*Valid keys"),
        ("remat=maybe", r"Bad value 'maybe' for remat.*bool"),
        ("steps", r"--set expects key=value"),
        ("meta_batch_size=0", r"meta_batch_size must be >= 1"),
        ("algorithm=sgd", r"Unknown algorithm 'sgd'. Registered: .*maml"),
        ("cg_steps=9", r"'cg_steps' is a setting of imaml, not of maml"),
        ("transductive=false", r"'transductive' is a setting of reptile, not of maml"),
        ("steps=3 steps=4", r"--set gives steps twice"),
        ("inner_lr=nan", r"inner_lr must be finite and > 0"),
        ("hidden=", r"hidden needs at least one layer width"),
        ("hidden=0", r"hidden needs at least one layer width >= 1"),
        ("eval_tasks=1", r"eval_tasks must be >= 2"),
    ],
)
def test_bad_overrides_are_clear_errors(assignment, message):
    with pytest.raises(ConfigError, match=message):
        override(get_config("sinusoid-maml"), assignment.split(" "))


def test_switching_algorithm_keeps_the_named_configs_settings():
    cfg = override(get_config("omniglot-minimal-maml"), ["algorithm=imaml", "cg_steps=9"])
    assert (cfg.algorithm, cfg.learner.cg_steps, cfg.learner.inner_lr) == ("imaml", 9, 0.4)
    assert cfg.learner.eval_steps == (3,) and cfg.steps == 600
    # fomaml's own default survives a switch from MAML (its first_order was MAML's default).
    assert override(get_config("sinusoid-maml"), ["algorithm=fomaml"]).learner.first_order
    assert "first_order" not in {
        f for f in to_dict(override(cfg, ["algorithm=reptile"]))["learner"]
    }


def test_unknown_config_lists_known_ones():
    with pytest.raises(ConfigError, match="Known configs: .*sinusoid-maml"):
        get_config("sinusoid-mamll")


def test_round_trip_through_dict():
    cfg = override(get_config("sinusoid-fomaml"), ["hidden=4,5", "seed=9"])
    assert from_dict(to_dict(cfg)) == cfg


@pytest.mark.parametrize(
    ("assignments", "backend", "kernel", "expected"),
    [
        # On CPU, metajax's C++ convolution kernel wherever it builds; tasks in turn.
        (["algorithm=maml", "meta_batch_size=32"], "cpu", True, ("ffi", 1)),
        (["algorithm=protonet", "meta_batch_size=1"], "cpu", True, ("ffi", 1)),
        (["algorithm=maml", "meta_batch_size=32"], "gpu", True, ("xla", None)),
        # Without the kernel: MAML's per-task weights take the matmul convolutions on CPU.
        (["algorithm=maml", "meta_batch_size=32"], "cpu", False, ("im2col", 1)),
        (["algorithm=maml", "meta_batch_size=32"], "gpu", False, ("xla", None)),
        # ProtoNet: a meta-batch of 32 runs task by task, so its convolutions sit in a loop.
        (["algorithm=protonet", "meta_batch_size=32"], "cpu", False, ("im2col", 1)),
        # One task per meta-batch: no loop, XLA's own convolution is the faster one.
        (["algorithm=protonet", "meta_batch_size=1"], "cpu", False, ("xla", 1)),
        (
            ["algorithm=protonet", "meta_batch_size=32", "conv=taps", "task_chunk=8"],
            "cpu",
            True,
            ("taps", 8),
        ),  # fmt: skip
    ],
)
def test_auto_conv_and_task_chunk_follow_the_backend(
    assignments, backend, kernel, expected, monkeypatch
):
    from metajax import kernels

    monkeypatch.setattr(kernels, "available", lambda: kernel)
    config = override(get_config("omniglot-maml"), assignments)
    per_task_weights = config.learner.per_task_weights
    got = config.benchmark.conv_and_task_chunk(backend, per_task_weights, config.meta_batch_size)
    assert got == expected


@pytest.mark.parametrize("name", ["sinusoid-reptile", "sinusoid-metasgd", "sinusoid-anil",
                                  "sinusoid-imaml"])  # fmt: skip
def test_sinusoid_algorithm_configs_train_and_adapt(name):
    import jax
    import numpy as np

    from metajax.training.trainer import init_state, make_meta_step, make_train_fn

    config = override(get_config(name), ["meta_batch_size=4"])
    exp = config.build()
    state = init_state(exp.learner, exp.optimizer, seed=0)
    train_fn = make_train_fn(make_meta_step(exp.learner, exp.train_tasks, config.meta_batch_size))
    before = jax.device_get(state.params)  # the call donates the state
    new, metrics = train_fn(state, 3)
    assert bool(np.all(np.isfinite(metrics["meta_loss"]))) and bool(metrics["finite"].all())
    moved = jax.tree.map(lambda a, b: float(np.abs(a - b).max()), new.params, before)
    assert max(jax.tree.leaves(moved)) > 0
    task = exp.test_tasks.sample(jax.random.key(1))
    adapted = exp.learner.adapt(new.params, task.support, steps=2)
    assert exp.learner.predict(adapted, task.query.x).shape == task.query.y.shape


def test_line_search_inner_solvers_are_refused_where_the_inner_loop_is_differentiated():
    config = override(get_config("sinusoid-maml"), ["inner_optimizer=lbfgs"])
    with pytest.raises(ValueError, match="while_loop, which cannot be differentiated; maml"):
        config.build()
    with pytest.raises(ValueError, match="applies only with lslr=false"):
        override(get_config("omniglot-minimal-mamlpp"), ["inner_optimizer=lbfgs"])
    mamlpp = override(get_config("omniglot-minimal-mamlpp"), ["inner_optimizer=lbfgs", "lslr=0"])
    with pytest.raises(ValueError, match="while_loop, which cannot be differentiated; mamlpp"):
        mamlpp.learner.build(mamlpp.benchmark.env(mamlpp.learner, mamlpp.trainer, "demo"))
    for solver in ("lbfgs", "sgd_linesearch"):
        override(get_config("sinusoid-imaml"), [f"inner_optimizer={solver}"]).build()
        override(get_config("sinusoid-reptile"), [f"inner_optimizer={solver}"]).build()


def test_a_run_saved_in_the_flat_format_of_earlier_versions_still_loads():
    # config.json as metajax wrote it before configs had parts: every algorithm's fields.
    flat = {"name": "sinusoid-maml", "steps": 300, "seed": 0, "meta_batch_size": 25,
            "steps_per_dispatch": 100, "checkpoint_every": 5000, "log_every": 100,
            "keep_checkpoints": 3, "eval_tasks": 1000, "eval_seed": 1234, "shard_tasks": False,
            "compute_dtype": "float32", "algorithm": "maml", "k_shot": 10, "k_query": 10,
            "eval_query": 100, "hidden": [40, 40], "inner_lr": 0.01, "inner_steps": 1,
            "outer_lr": 0.001, "remat": False, "eval_steps": [0, 1, 10], "imaml_lambda": 1.0,
            "cg_steps": 5, "inner_optimizer": "sgd", "inner_grad_clip": 0.0}  # fmt: skip
    assert from_dict(flat) == override(get_config("sinusoid-maml"), ["steps=300"])
    fewshot = {"name": "omniglot-minimal-protonet", "algorithm": "protonet", "eval_inner_steps": 3,
               "inner_lr": 0.4, "n_way": 20}  # fmt: skip
    assert from_dict(fewshot).n_way == 20 and from_dict(fewshot).algorithm == "protonet"
    metasgd = {"name": "omniglot-minimal-maml", "algorithm": "metasgd", "eval_inner_steps": 1}
    assert from_dict(metasgd).learner.eval_steps == (1,)
