"""The meta-batch sharded over 4 simulated CPU devices equals the single-device run."""

import json
import os
import subprocess
import sys
import textwrap

import pytest

SCRIPT = textwrap.dedent(
    """
    import os
    os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=4"
    os.environ["JAX_PLATFORMS"] = "cpu"
    import json, sys
    import jax, numpy as np, optax
    from metajax import MAML, InnerLoop, Sinusoid, from_nnx, losses
    from metajax.models import MLP
    from metajax.training.trainer import init_state, make_meta_step, make_train_fn, task_mesh

    assert jax.device_count() == 4
    maml = MAML(from_nnx(lambda r: MLP(1, 1, (16,), rngs=r)), losses.mse,
                InnerLoop(optax.sgd(0.01)), task_chunk=int(sys.argv[1]) or None)
    opt = optax.adam(1e-3)
    out = {}
    for name, mesh in (("single", None), ("sharded", task_mesh())):
        fn = make_train_fn(make_meta_step(maml, Sinusoid(), 8, mesh))
        state = init_state(maml, opt, seed=0)
        if name == "sharded":
            out["hlo_all_reduce"] = "all-reduce" in fn.lower(state, 3).compile().as_text()
        state, metrics = fn(state, 3)
        out[name] = [np.asarray(x).tolist() for x in jax.tree.leaves(state.params)]
        out[name + "_loss"] = np.asarray(metrics["meta_loss"]).tolist()
        if name == "sharded":
            out["replicated"] = all(x.sharding.is_fully_replicated for x in jax.tree.leaves(state.params))
    try:
        make_meta_step(maml, Sinusoid(), 6, task_mesh())
    except ValueError as err:
        out["error"] = str(err)
    # The config switch, through train(): checkpoints and all.
    import dataclasses, tempfile
    from metajax.config import get_config
    from metajax.training.trainer import train
    base = get_config("sinusoid-maml").replace(steps=4, steps_per_dispatch=2,
                                               meta_batch_size=8, checkpoint_every=2)
    with tempfile.TemporaryDirectory() as tmp:
        finals = [train(base.replace(shard_tasks=flag), f"{tmp}/{flag}").params
                  for flag in (False, True)]
        try:
            train(base.replace(shard_tasks=True, meta_batch_size=6), f"{tmp}/x")
        except ValueError as err:
            out["train_error"] = str(err)
    out["train_max_diff"] = max(float(np.abs(a - b).max()) for a, b in
                                zip(*map(jax.tree.leaves, finals)))
    print(json.dumps(out))
    """
)


@pytest.mark.slow
@pytest.mark.parametrize("task_chunk", [0, 2])
def test_sharded_meta_batch_equals_single_device(task_chunk):
    env = dict(os.environ)
    env.pop("XLA_FLAGS", None)
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(task_chunk)],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    import numpy as np

    for a, b in zip(out["single"], out["sharded"], strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(out["single_loss"], out["sharded_loss"], rtol=1e-5)
    # Really split: the compiled program averages gradients across devices.
    assert out["hlo_all_reduce"]
    assert out["replicated"]
    assert "meta_batch_size=6 does not split over 4 devices" in out["error"]
    assert "multiple of 4 (for example 8)" in out["error"]
    assert out["train_max_diff"] < 1e-5
    assert "meta_batch_size=6 does not split over 4 devices" in out["train_error"]


GP_SCRIPT = textwrap.dedent(
    """
    import os
    os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=2"
    os.environ["JAX_PLATFORMS"] = "cpu"
    import json
    import jax, numpy as np
    from metajax.config import get_config, override
    from metajax.training.trainer import init_state, make_meta_step, make_train_fn, task_mesh

    experiment = override(get_config("gp-cnp"), ["width=16"]).build()
    out = {}
    for name, mesh in (("single", None), ("sharded", task_mesh())):
        fn = make_train_fn(make_meta_step(experiment.learner, experiment.train_tasks, 16, mesh))
        state, metrics = fn(init_state(experiment.learner, experiment.optimizer, seed=0), 2)
        out[name] = [np.asarray(x).tolist() for x in jax.tree.leaves(state.params)]
    print(json.dumps(out))
    """
)


@pytest.mark.slow
def test_sharded_gaussian_process_meta_batch_finishes_and_equals_single_device():
    # Each device factors its 8 functions' covariances. jaxlib's batched CPU Cholesky waited
    # on the thread pool that both devices' programs held: on 2 cores this step used to hang
    # forever (with 4 functions a device it did not).
    env = dict(os.environ)
    env.pop("XLA_FLAGS", None)
    proc = subprocess.run([sys.executable, "-c", GP_SCRIPT], capture_output=True, text=True,
                          env=env, timeout=240)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    import numpy as np

    for a, b in zip(out["single"], out["sharded"], strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
