"""Hypernetwork heads and LEO: the generated head against the hand computation for a linear
generator (with and without FiLM), LEO's latent steps, order invariance, float64 finite
differences through the latent inner loop, and learning."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from _metric_tasks import accuracy_before_and_after_training, linear

from metajax import Task
from metajax.algorithms.hypernet import HyperNet
from metajax.algorithms.leo import LEO
from metajax.config import get_config
from metajax.core.inner import InnerLoop
from metajax.core.types import Split


def _support(key, ways=3, shots=2, dim=8):
    return Split(jax.random.normal(key, (ways * shots, dim)), jnp.repeat(jnp.arange(ways), shots))


def _unit(v):
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def _randomized(params, key):
    """Every parameter redrawn, so that the identity and zero initializations hide nothing."""
    leaves, tree = jax.tree.flatten(params)
    keys = jax.random.split(key, len(leaves))
    return jax.tree.unflatten(tree, [0.5 * jax.random.normal(k, a.shape) for k, a in
                                     zip(keys, leaves, strict=True)])  # fmt: skip


@pytest.mark.parametrize("film", [False, True])
def test_the_generated_head_equals_the_hand_computed_one(film):
    net = HyperNet(linear(8, 5), feature_dim=5, film=film)
    params = _randomized(net.init(jax.random.key(0)), jax.random.key(1))
    support, xq = _support(jax.random.key(2)), jax.random.normal(jax.random.key(3), (4, 8))
    w = np.asarray(params["embedding"])
    raw = np.asarray(support.x) @ w
    means = np.stack([raw[np.asarray(support.y) == k].mean(0) for k in range(3)])
    gamma = beta = np.zeros(5)
    if film:
        out = means.mean(0) @ np.asarray(params["film"]["kernel"]) + np.asarray(
            params["film"]["bias"]
        )
        gamma, beta = out[:5], out[5:]
        modulated = (1 + gamma) * raw + beta
        means = np.stack([modulated[np.asarray(support.y) == k].mean(0) for k in range(3)])
    gen = params["generator"]
    weights = means @ np.asarray(gen["kernel"]) + np.asarray(gen["bias"])  # w_k = A a_k + b
    head = net.adapt(params, support)
    np.testing.assert_allclose(head.weights[:3], weights, rtol=1e-5, atol=1e-5)
    queries = (1 + gamma) * (np.asarray(xq) @ w) + beta
    logits = np.exp(float(params["log_scale"])) * _unit(queries) @ _unit(weights).T
    np.testing.assert_allclose(net.predict(head, xq)[:, :3], logits, rtol=1e-4, atol=1e-4)
    assert (np.asarray(net.predict(head, xq))[:, 3:] < -1e8).all()


@pytest.mark.parametrize("make", [lambda: HyperNet(linear(8, 5), feature_dim=5, film=True),
                                  lambda: LEO(linear(8, 5), 5, 3, InnerLoop(optax.sgd(0.5), 3))])  # fmt: skip
def test_predictions_ignore_the_supports_order(make):
    net = make()
    params = _randomized(net.init(jax.random.key(0)), jax.random.key(1))
    support, xq = _support(jax.random.key(2)), jax.random.normal(jax.random.key(3), (4, 8))
    order = jnp.array([4, 1, 5, 0, 3, 2])
    shuffled = Split(support.x[order], support.y[order])
    np.testing.assert_allclose(net.predict(net.adapt(params, shuffled), xq),
                               net.predict(net.adapt(params, support), xq), rtol=1e-4,
                               atol=1e-5)  # fmt: skip


def test_leo_decodes_the_encoded_means_and_its_latent_steps_lower_the_support_loss():
    net = LEO(linear(8, 5), 5, 3, InnerLoop(optax.sgd(0.5), 3))
    params = _randomized(net.init(jax.random.key(0)), jax.random.key(1))
    params["log_scale"] = jnp.log(10.0)
    support = _support(jax.random.key(2))
    feats = np.asarray(support.x) @ np.asarray(params["embedding"])
    means = np.stack([feats[np.asarray(support.y) == k].mean(0) for k in range(3)])
    enc, dec = params["encoder"], params["decoder"]
    codes = means @ np.asarray(enc["kernel"]) + np.asarray(enc["bias"])
    weights = codes @ np.asarray(dec["kernel"]) + np.asarray(dec["bias"])
    np.testing.assert_allclose(net.adapt(params, support, steps=0).weights[:3], weights,
                               rtol=1e-5, atol=1e-5)  # fmt: skip

    def support_loss(steps):
        logits = net.predict(net.adapt(params, support, steps=steps), support.x)
        return float(optax.softmax_cross_entropy_with_integer_labels(logits, support.y).mean())

    losses = [support_loss(k) for k in (0, 1, 3, 10)]
    assert losses == sorted(losses, reverse=True) and losses[-1] < 0.7 * losses[0], losses


def test_leo_meta_gradient_through_the_latent_steps_matches_float64_finite_differences():
    with jax.enable_x64(True):
        embedding = linear(4, 3)
        net = LEO(embedding, 3, 2, InnerLoop(optax.sgd(0.3), 2))
        params = jax.tree.map(lambda a: jnp.asarray(a, jnp.float64),
                              _randomized(net.init(jax.random.key(0)), jax.random.key(1)))  # fmt: skip
        support = Split(jax.random.normal(jax.random.key(2), (4, 4), jnp.float64),
                        jnp.array([0, 0, 1, 1]))  # fmt: skip
        query = Split(jax.random.normal(jax.random.key(3), (4, 4), jnp.float64),
                      jnp.array([0, 1, 0, 1]))  # fmt: skip
        task = Task(support, query, {})
        grads, _ = jax.jit(net.meta_grad)(params, task, jax.random.key(0))
        flat, unravel = jax.flatten_util.ravel_pytree(params)

        @jax.jit  # one compiled call per perturbation, not an op-by-op trace
        def loss(v):
            return net.meta_loss(unravel(v), task, jax.random.key(0))[0]

        eps = 1e-6
        numeric = np.array([(loss(flat.at[i].add(eps)) - loss(flat.at[i].add(-eps))) / (2 * eps)
                            for i in range(flat.size)])  # fmt: skip
        analytic = np.asarray(jax.flatten_util.ravel_pytree(grads)[0])
        np.testing.assert_allclose(analytic, numeric, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("name", ["hypernet", "leo"])
def test_it_learns_to_ignore_noise_dimensions_and_its_config_is_registered(name):
    assert get_config(f"omniglot-minimal-{name}").algorithm == name
    if name == "hypernet":
        net = HyperNet(linear(8, 8), feature_dim=8, film=True)
    else:
        net = LEO(linear(8, 8), 8, 4, InnerLoop(optax.sgd(0.5), 2))
    before, after = accuracy_before_and_after_training(net)
    assert after > before + 0.15 and after > 0.75, (before, after)
