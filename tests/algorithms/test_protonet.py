"""Prototypical Networks: prototypes and logits by hand, a no-transfer meta-step."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax

from metajax import from_function, from_nnx, init_state, make_meta_step, make_train_fn, sample_tasks
from metajax.algorithms import ProtoNet
from metajax.core.types import Split, Task
from metajax.datasets.images import ClassImages
from metajax.models import Conv4
from metajax.tasks import Episodes


def _linear():
    return from_function(lambda p, x: x @ p, lambda key: jax.random.normal(key, (3, 2)))


def test_logits_are_negative_squared_distances_to_class_means():
    net = ProtoNet(_linear())
    w = net.init(jax.random.key(0))
    xs = jax.random.normal(jax.random.key(1), (6, 3))
    ys = jnp.array([2, 0, 1, 0, 2, 1])
    xq = jax.random.normal(jax.random.key(2), (4, 3))
    adapted = net.adapt(w, Split(xs, ys))
    emb, qemb = np.asarray(xs @ w), np.asarray(xq @ w)
    protos = np.stack([emb[np.asarray(ys) == k].mean(0) for k in range(3)])
    expected = -((qemb[:, None] - protos[None]) ** 2).sum(-1)
    logits = np.asarray(net.predict(adapted, xq))
    np.testing.assert_allclose(logits[:, :3], expected, rtol=1e-4, atol=1e-4)
    assert (logits[:, 3:] < -1e8).all(), "labels absent from the support are never predicted"


def test_meta_loss_is_cross_entropy_and_gradient_matches_finite_differences():
    with jax.enable_x64(True):
        net = ProtoNet(_linear())
        w = net.init(jax.random.key(0)).astype(jnp.float64)
        x = jax.random.normal(jax.random.key(1), (8, 3), jnp.float64)
        y = jnp.array([0, 1, 0, 1, 1, 0, 1, 0])
        task = Task(Split(x[:4], y[:4]), Split(x[4:], y[4:]))
        loss = lambda p: net.meta_loss(p, task, None)[0]  # noqa: E731
        g = jax.grad(loss)(w)
        eps = 1e-6
        fd = np.zeros_like(np.asarray(w))
        for i in np.ndindex(w.shape):
            e = jnp.zeros_like(w).at[i].set(eps)
            fd[i] = (loss(w + e) - loss(w - e)) / (2 * eps)
        np.testing.assert_allclose(g, fd, rtol=1e-6, atol=1e-9)


def test_jitted_meta_step_with_episode_sampling_makes_no_host_transfer():
    imgs = [
        np.random.RandomState(c).randint(0, 255, (4, 16, 16, 1)).astype(np.uint8) for c in range(6)
    ]
    data = ClassImages.from_lists(imgs, [f"c{c}" for c in range(6)], ["a", "b"] * 3)
    dist = Episodes(data, n_way=3, k_shot=1, k_query=2, rotations=True)
    net = ProtoNet(from_nnx(lambda r: Conv4(1, 0, image_size=16, filters=8, rngs=r)))
    opt = optax.adam(1e-3)
    run = make_train_fn(make_meta_step(net, dist, meta_batch_size=4))
    state = run(init_state(net, opt, seed=0), 2)[0]  # compile, place constants
    with jax.transfer_guard("disallow"):
        state, metrics = run(state, 2)
        state, metrics = run(state, 1)
    assert int(state.step) == 5
    chex.assert_shape(metrics["accuracy"], (1,))
    tasks = sample_tasks(dist, jax.random.key(0), 2)
    assert tasks.support.x.shape == (2, 3, 16, 16, 1)
