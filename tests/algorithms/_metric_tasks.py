"""A linear embedding and synthetic episodes for the metric-based learners' tests."""

import jax
import jax.numpy as jnp
import numpy as np

from metajax import Task, from_function
from metajax.core.types import Split


def linear(dim_in=3, dim_out=5):
    """The embedding ``x @ W``, W drawn with unit-variance outputs."""
    return from_function(
        lambda w, x: x @ w, lambda k: jax.random.normal(k, (dim_in, dim_out)) / np.sqrt(dim_in)
    )


def noise_episode(key):
    """A 3-way 2-shot episode with 15 queries whose classes differ in 2 of 8 input dimensions;
    the other 6 are noise 10x larger, which a learned embedding must learn to ignore."""
    kc, ks, kq = jax.random.split(key, 3)
    centres = jnp.pad(jax.random.normal(kc, (3, 2)) * 2, ((0, 0), (0, 6)))
    noise = jnp.array([0.3, 0.3, 3, 3, 3, 3, 3, 3])
    ys, yq = jnp.repeat(jnp.arange(3), 2), jnp.repeat(jnp.arange(3), 5)
    return Task(
        Split(centres[ys] + noise * jax.random.normal(ks, (6, 8)), ys),
        Split(centres[yq] + noise * jax.random.normal(kq, (15, 8)), yq),
        {},
    )


def accuracy_before_and_after_training(net, steps=150, lr=3e-2, meta_batch=16,
                                       episode=noise_episode, eval_episodes=200):  # fmt: skip
    """Meta-trains ``net`` with Adam on meta-batches of ``episode`` (default `noise_episode`);
    returns its mean test accuracy on ``eval_episodes`` fixed episodes before and after."""
    import optax

    opt = optax.adam(lr)
    params = net.init(jax.random.key(0))
    state = opt.init(params)

    @jax.jit
    def step(params, state, key):
        tasks = jax.vmap(episode)(jax.random.split(key, meta_batch))
        grads, _ = net.batch_meta_grad(params, tasks, jax.random.split(key, meta_batch), 0)
        updates, state = opt.update(grads, state)
        return optax.apply_updates(params, updates), state

    @jax.jit
    def accuracy(params):
        keys = jax.random.split(jax.random.key(99), eval_episodes)
        tasks = jax.vmap(episode)(keys)
        return jax.vmap(lambda t, k: net.evaluate_task(params, t, k)["accuracy"])(
            tasks, keys
        ).mean()

    before = float(accuracy(params))
    for i in range(steps):
        params, state = step(params, state, jax.random.key(i))
    return before, float(accuracy(params))
