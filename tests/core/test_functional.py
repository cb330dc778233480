"""Models as pure functions: NNX, Linen and plain-function adapters."""

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from metajax.core.functional import from_function, from_linen, from_nnx
from metajax.core.inner import InnerLoop
from metajax.models import MLP


def test_nnx_factory_init_depends_on_key_and_apply_matches_module():
    model = from_nnx(lambda r: MLP(2, 3, (5,), rngs=r))
    p0, p1 = model.init(jax.random.key(0)), model.init(jax.random.key(1))
    assert any(
        not jnp.allclose(a, b)
        for a, b in zip(jax.tree.leaves(p0), jax.tree.leaves(p1), strict=True)
    )
    x = jnp.arange(8.0).reshape(4, 2)
    module = MLP(2, 3, (5,), rngs=nnx.Rngs(jax.random.key(0)))
    chex.assert_trees_all_close(model.apply(p0, x), module(x), rtol=1e-6)
    chex.assert_shape(model.apply(p0, x), (4, 3))


def test_nnx_instance_keeps_its_weights():
    module = nnx.Linear(3, 2, rngs=nnx.Rngs(7))
    model = from_nnx(module)
    x = jnp.ones((2, 3))
    chex.assert_trees_all_close(model.apply(model.init(jax.random.key(99)), x), module(x))


def test_nnx_params_are_a_differentiable_pytree():
    model = from_nnx(lambda r: MLP(1, 1, (4,), rngs=r))
    p = model.init(jax.random.key(0))
    g = jax.jit(jax.grad(lambda q: model.apply(q, jnp.ones((3, 1))).sum()))(p)
    chex.assert_trees_all_equal_structs(g, p)


def test_linen_adapter():
    module = nn.Dense(4)
    model = from_linen(module, jnp.ones((1, 3)))
    p = model.init(jax.random.key(0))
    x = jnp.ones((5, 3))
    chex.assert_trees_all_close(model.apply(p, x), module.apply({"params": p}, x))
    chex.assert_shape(p["kernel"], (3, 4))


def test_function_adapter():
    model = from_function(lambda p, x: x * p, lambda key: jnp.float32(2.0))
    assert float(model(model.init(jax.random.key(0)), jnp.float32(3.0))) == 6.0


def test_mixed_precision_computes_in_bfloat16_and_keeps_float32_params_and_gradients():
    import optax

    from metajax import MAML, Sinusoid, losses
    from metajax.core.functional import mixed_precision
    from metajax.models import MLP

    full = from_nnx(lambda r: MLP(1, 1, (40, 40), rngs=r))
    half = mixed_precision(full)
    params = full.init(jax.random.key(0))
    x = jax.random.uniform(jax.random.key(1), (10, 1), minval=-5, maxval=5)
    jaxpr = str(jax.make_jaxpr(half.apply)(params, x))
    assert "dot_general" in jaxpr and "bf16[10,40]" in jaxpr  # the matmuls run in bfloat16
    assert half.apply(params, x).dtype == jnp.float32
    np.testing.assert_allclose(half.apply(params, x), full.apply(params, x), rtol=0.05, atol=0.05)
    task = Sinusoid().sample(jax.random.key(2))
    grads = {}
    for name, model in (("full", full), ("half", half)):
        maml = MAML(model, losses.mse, InnerLoop(optax.sgd(0.01)))
        grads[name], _ = jax.jit(maml.meta_grad)(params, task, jax.random.key(3))
    assert all(g.dtype == jnp.float32 for g in jax.tree.leaves(grads["half"]))
    flat = [jnp.concatenate([g.ravel() for g in jax.tree.leaves(grads[k])]) for k in grads]
    cosine = flat[0] @ flat[1] / (jnp.linalg.norm(flat[0]) * jnp.linalg.norm(flat[1]))
    assert cosine > 0.99  # the same meta-gradient, up to bfloat16 rounding
    assert not jnp.array_equal(flat[0], flat[1])  # ... which is really there
