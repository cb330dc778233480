"""Prototypical Networks with scaled cosine similarity: logits by hand, invariance to the
embedding's norm, the scale's gradient, and learning to ignore noise dimensions."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
from _metric_tasks import linear, noise_episode

from metajax.algorithms.protonet_cosine import CosineProtoNet
from metajax.config import get_config, override
from metajax.core.types import Split


def _episode(key, ways=3, shots=2):
    xs = jax.random.normal(key, (ways * shots, 3))
    return Split(xs, jnp.repeat(jnp.arange(ways), shots))


def test_logits_are_the_scaled_cosine_to_class_means():
    net = CosineProtoNet(linear(), scale_init=7.0)
    params = net.init(jax.random.key(0))
    support = _episode(jax.random.key(1))
    xq = jax.random.normal(jax.random.key(2), (4, 3))
    w = np.asarray(params["embedding"])
    emb, qemb = np.asarray(support.x) @ w, np.asarray(xq) @ w
    protos = np.stack([emb[np.asarray(support.y) == k].mean(0) for k in range(3)])
    cos = (qemb / np.linalg.norm(qemb, axis=1, keepdims=True)) @ (
        protos / np.linalg.norm(protos, axis=1, keepdims=True)
    ).T
    logits = np.asarray(net.predict(net.adapt(params, support), xq))
    np.testing.assert_allclose(logits[:, :3], 7.0 * cos, rtol=1e-5, atol=1e-5)
    assert (logits[:, 3:] < -1e8).all(), "labels absent from the support are never predicted"


def test_logits_ignore_the_embeddings_norm_and_the_scale_is_learned():
    net = CosineProtoNet(linear())
    params = net.init(jax.random.key(0))
    support, xq = _episode(jax.random.key(1)), jax.random.normal(jax.random.key(2), (6, 3))
    scaled = {**params, "embedding": 3.0 * params["embedding"]}
    np.testing.assert_allclose(
        net.predict(net.adapt(params, support), xq),
        net.predict(net.adapt(scaled, support), xq),
        rtol=1e-5,
    )
    task = jax.tree.map(
        lambda a: a, __import__("metajax").Task(support, Split(xq, jnp.arange(6) % 3))
    )
    grads, _ = net.meta_grad(params, task, jax.random.key(3))
    assert float(jnp.abs(grads["log_scale"])) > 0


def test_it_learns_and_its_config_is_registered():
    config = override(get_config("omniglot-minimal-protonet"), ["algorithm=protonet-cosine"])
    assert config.algorithm == "protonet-cosine" and config.learner.scale_init == 10.0
    # 3-way episodes whose classes differ in 2 of 8 input dimensions, the other 6 noise: the
    # embedding must learn to ignore the noise.
    net = CosineProtoNet(linear(8, 8))
    opt = optax.adam(3e-2)
    params = net.init(jax.random.key(0))
    state = opt.init(params)

    @jax.jit
    def step(params, state, key):
        tasks = jax.vmap(noise_episode)(jax.random.split(key, 16))
        grads, metrics = net.batch_meta_grad(params, tasks, jax.random.split(key, 16))
        updates, state = opt.update(grads, state, params)
        return optax.apply_updates(params, updates), state, metrics

    accuracies = []
    for i in range(200):
        params, state, metrics = step(params, state, jax.random.key(i))
        accuracies.append(float(metrics["accuracy"]))
    assert np.mean(accuracies[-40:]) > np.mean(accuracies[:10]) + 0.15
