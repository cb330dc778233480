"""Relation Networks: the split first convolution equals convolving every concatenated pair,
the K-shot class map is the sum of the class's maps, the MSE objective by hand, order
invariance, float64 finite differences, and learning on synthetic images."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _metric_tasks import accuracy_before_and_after_training
from flax import nnx

from metajax import Task
from metajax.algorithms.relationnet import RelationModule, RelationNet
from metajax.config import get_config
from metajax.core.functional import from_nnx
from metajax.core.types import Split
from metajax.models.conv4 import Conv4

SIDE = 16


def _net(dtype=jnp.float32, filters=8):
    embedding = from_nnx(lambda r: Conv4(1, 0, image_size=SIDE, filters=filters, conv="xla",
                                         pooled_blocks=2, rngs=r))  # fmt: skip
    relation = from_nnx(lambda r: RelationModule(filters, filters, 4, spatial=(4, 4), conv="xla",
                                                 rngs=r))  # fmt: skip
    net = RelationNet(embedding, relation)
    params = jax.tree.map(lambda a: a.astype(dtype), net.init(jax.random.key(0)))
    return net, params


def _episode(key, ways=3, shots=1, queries=4, dtype=jnp.float32):
    """Images of ``ways`` random patterns plus noise."""
    kp, ks, kq = jax.random.split(key, 3)
    patterns = jax.random.normal(kp, (ways, SIDE, SIDE, 1), dtype)
    ys, yq = jnp.repeat(jnp.arange(ways), shots), jnp.repeat(jnp.arange(ways), queries)
    xs = patterns[ys] + 0.8 * jax.random.normal(ks, (ys.size, SIDE, SIDE, 1), dtype)
    xq = patterns[yq] + 0.8 * jax.random.normal(kq, (yq.size, SIDE, SIDE, 1), dtype)
    return Task(Split(xs, ys), Split(xq, yq), {})


def test_the_split_first_convolution_equals_convolving_each_concatenated_pair():
    module = RelationModule(6, 5, 4, spatial=(8, 8), conv="xla", rngs=nnx.Rngs(0))
    queries = jax.random.normal(jax.random.key(1), (3, 8, 8, 6))
    classes = jax.random.normal(jax.random.key(2), (4, 8, 8, 6))
    # The paper's form: one convolution over the depth concatenation of every pair.
    joint = nnx.Conv(12, 5, (3, 3), padding="SAME", rngs=nnx.Rngs(0))
    joint.kernel[...] = jnp.concatenate([module.conv_query.kernel[...],
                                         module.conv_class.kernel[...]], axis=2)  # fmt: skip
    joint.bias[...] = module.conv_query.bias[...]
    pairs = jnp.concatenate([jnp.repeat(queries, 4, 0), jnp.tile(classes, (3, 1, 1, 1))], -1)
    split = module.conv_query(queries)[:, None] + module.conv_class(classes)[None, :]
    np.testing.assert_allclose(split.reshape(12, 8, 8, 5), joint(pairs), rtol=1e-5, atol=1e-5)
    scores = module(queries, classes)
    assert scores.shape == (3, 4) and bool(((scores > 0) & (scores < 1)).all())


def test_class_maps_are_sums_and_the_loss_is_mse_to_one_hot():
    net, params = _net()
    task = _episode(jax.random.key(3), ways=3, shots=2)
    adapted = net.adapt(params, task.support)
    maps = net.embedding.apply(params["embedding"], task.support.x)
    np.testing.assert_allclose(adapted.maps[1], maps[2] + maps[3], rtol=1e-5, atol=1e-6)
    assert np.asarray(adapted.present).tolist() == [True] * 3 + [False] * 3
    scores = np.asarray(net.predict(adapted, task.query.x))
    assert (scores[:, 3:] == -1).all(), "absent labels score below any sigmoid"
    one_hot = np.eye(3)[np.asarray(task.query.y)]
    loss, _ = net.meta_loss(params, task, jax.random.key(0))
    assert float(loss) == pytest.approx(((scores[:, :3] - one_hot) ** 2).mean(), rel=1e-5)


def test_scores_ignore_the_supports_order():
    net, params = _net()
    task = _episode(jax.random.key(4), ways=3, shots=2)
    order = jnp.array([5, 2, 0, 4, 1, 3])
    shuffled = Split(task.support.x[order], task.support.y[order])
    np.testing.assert_allclose(net.predict(net.adapt(params, shuffled), task.query.x),
                               net.predict(net.adapt(params, task.support), task.query.x),
                               rtol=1e-5, atol=1e-6)  # fmt: skip


def test_meta_gradient_matches_float64_finite_differences():
    with jax.enable_x64(True):
        net, params = _net(jnp.float64, filters=2)
        task = _episode(jax.random.key(5), ways=2, queries=2, dtype=jnp.float64)
        grads, _ = jax.jit(net.meta_grad)(params, task, jax.random.key(0))
        flat, unravel = jax.flatten_util.ravel_pytree(params)
        g = np.asarray(jax.flatten_util.ravel_pytree(grads)[0])

        @jax.jit  # one compiled call per perturbation, not an op-by-op trace
        def loss(v):
            return net.meta_loss(unravel(v), task, jax.random.key(0))[0]

        picks = np.argsort(-np.abs(g))[:12]  # the largest entries, and a few random ones
        picks = np.concatenate([picks, np.random.default_rng(0).choice(flat.size, 12)])
        eps = 1e-6
        numeric = [(loss(flat.at[i].add(eps)) - loss(flat.at[i].add(-eps))) / (2 * eps)
                   for i in picks]  # fmt: skip
        np.testing.assert_allclose(g[picks], numeric, rtol=1e-5, atol=1e-9)


def test_it_learns_and_its_config_is_registered():
    config = get_config("omniglot-minimal-relationnet")
    assert config.algorithm == "relationnet" and config.train_way == 20
    net, _ = _net()
    before, after = accuracy_before_and_after_training(net, steps=90, lr=1e-2, meta_batch=4,
                                                       episode=_episode, eval_episodes=100)  # fmt: skip
    assert after > before + 0.25 and after > 0.7, (before, after)
