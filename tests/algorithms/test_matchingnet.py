"""Matching Networks: attention by hand, sums to one, invariant to the support's order, its
meta-gradient against float64 finite differences, and learning."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _metric_tasks import accuracy_before_and_after_training, linear

from metajax import Task, from_function
from metajax.algorithms.matchingnet import MatchingNet
from metajax.config import get_config
from metajax.core.types import Split


def _support(key, ways=3, shots=2, dim=3):
    return Split(jax.random.normal(key, (ways * shots, dim)), jnp.repeat(jnp.arange(ways), shots))


def _unit(v):
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def test_attention_and_log_probabilities_match_the_papers_equations_by_hand():
    net = MatchingNet(linear(), scale_init=4.0)
    params = net.init(jax.random.key(0))
    support, xq = _support(jax.random.key(1)), jax.random.normal(jax.random.key(2), (4, 3))
    w = np.asarray(params["embedding"])
    cos = _unit(np.asarray(xq) @ w) @ _unit(np.asarray(support.x) @ w).T
    att = np.exp(4.0 * cos) / np.exp(4.0 * cos).sum(1, keepdims=True)  # eq. 2
    memory = net.adapt(params, support)
    np.testing.assert_allclose(net.attention(memory, xq), att, rtol=1e-5, atol=1e-6)
    probs = np.stack([att[:, np.asarray(support.y) == k].sum(1) for k in range(3)], 1)  # eq. 1
    log_probs = np.asarray(net.predict(memory, xq))
    np.testing.assert_allclose(log_probs[:, :3], np.log(probs), rtol=1e-5, atol=1e-6)
    assert (log_probs[:, 3:] < -1e8).all(), "labels no support example has are never predicted"


def test_attention_sums_to_one_and_ignores_the_supports_order():
    net = MatchingNet(linear())
    params = net.init(jax.random.key(0))
    support, xq = (
        _support(jax.random.key(1), ways=4, shots=3),
        jax.random.normal(jax.random.key(2), (7, 3)),
    )
    memory = net.adapt(params, support)
    np.testing.assert_allclose(net.attention(memory, xq).sum(-1), np.ones(7), rtol=1e-6)
    order = jax.random.permutation(jax.random.key(3), 12)
    shuffled = net.adapt(params, Split(support.x[order], support.y[order]))
    np.testing.assert_allclose(net.predict(shuffled, xq), net.predict(memory, xq), rtol=1e-5)
    # Each example's attention moves with it.
    np.testing.assert_allclose(
        net.attention(shuffled, xq), net.attention(memory, xq)[:, order], rtol=1e-5
    )


def test_meta_gradient_matches_float64_finite_differences():
    with jax.enable_x64(True):
        net = MatchingNet(
            from_function(
                lambda w, x: jnp.tanh(x @ w),
                lambda k: jax.random.normal(k, (3, 4), jnp.float64) / 2,
            ),
            scale_init=3.0,
        )
        params = jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), net.init(jax.random.key(0)))
        support = _support(jax.random.key(1))
        support = Split(support.x.astype(jnp.float64), support.y)
        xq = jax.random.normal(jax.random.key(2), (6, 3), jnp.float64)
        task = Task(support, Split(xq, jnp.arange(6) % 3), {})
        grads, _ = net.meta_grad(params, task, jax.random.key(3))
        flat, unravel = jax.flatten_util.ravel_pytree(params)

        def loss(v):
            return net.meta_loss(unravel(v), task, jax.random.key(3))[0]

        eps = 1e-6
        numeric = np.array(
            [(loss(flat.at[i].add(eps)) - loss(flat.at[i].add(-eps))) / (2 * eps)
             for i in range(flat.size)]
        )  # fmt: skip
        analytic = np.asarray(jax.flatten_util.ravel_pytree(grads)[0])
        np.testing.assert_allclose(analytic, numeric, rtol=1e-6, atol=1e-9)
        assert abs(analytic[-1]) > 1e-6 or abs(analytic[0]) > 1e-6  # scale or weights move


def test_it_learns_to_ignore_noise_dimensions_and_its_config_is_registered():
    config = get_config("omniglot-minimal-matchingnet")
    assert config.algorithm == "matchingnet" and config.learner.scale_init == 10.0
    before, after = accuracy_before_and_after_training(MatchingNet(linear(8, 8)))
    assert after > before + 0.15 and after > 0.75, (before, after)


@pytest.mark.parametrize("learn_scale", [True, False])
def test_a_fixed_scale_gets_no_gradient(learn_scale):
    net = MatchingNet(linear(), scale_init=1.0, learn_scale=learn_scale)
    params = net.init(jax.random.key(0))
    task = Task(_support(jax.random.key(1)), _support(jax.random.key(2)), {})
    grads, _ = net.meta_grad(params, task, jax.random.key(3))
    assert (float(jnp.abs(grads["log_scale"])) > 0) == learn_scale


def _fce_net(dim_in=8, dim=5, steps=3):
    return MatchingNet(linear(dim_in, dim), fce_dim=dim, fce_steps=steps)


def test_full_context_embeddings_by_hand():
    """g(x_i, S) = h_fwd_i + h_bwd_i + f'(x_i), and the attention LSTM's K steps, written out
    with a Python loop (the model runs them under lax.scan)."""
    from metajax.models.recurrent import lstm_step

    net = _fce_net()
    params = net.init(jax.random.key(0))
    support, xq = _support(jax.random.key(1), dim=8), jax.random.normal(jax.random.key(2), (4, 8))
    emb = support.x @ params["embedding"]
    fce, zeros = params["fce"], jnp.zeros(5)
    fwd, state = [], (zeros, zeros)
    for e in emb:
        state = lstm_step(fce["forward"], state, e)
        fwd.append(state[0])
    bwd, state = [], (zeros, zeros)
    for e in emb[::-1]:
        state = lstm_step(fce["backward"], state, e)
        bwd.append(state[0])
    g = emb + jnp.stack(fwd) + jnp.stack(bwd[::-1])
    memory = net.adapt(params, support)
    np.testing.assert_allclose(memory.embedded, g, rtol=1e-5, atol=1e-6)
    q = xq @ params["embedding"]
    h = c = read = jnp.zeros_like(q)
    for _ in range(3):
        h_hat, c = lstm_step(fce["attention"], (h, c), jnp.concatenate([q, read], -1))
        h = h_hat + q
        read = jax.nn.softmax(h @ g.T, -1) @ g
    cos = _unit(np.asarray(h)) @ _unit(np.asarray(g)).T
    att = np.exp(10.0 * cos) / np.exp(10.0 * cos).sum(1, keepdims=True)
    np.testing.assert_allclose(net.attention(memory, xq), att, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(net.attention(memory, xq).sum(-1), np.ones(4), rtol=1e-6)


def test_fce_meta_gradient_matches_float64_finite_differences_and_it_learns():
    with jax.enable_x64(True):
        net = _fce_net(3, 3, 2)
        params = jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), net.init(jax.random.key(0)))
        support = _support(jax.random.key(1))
        support = Split(support.x.astype(jnp.float64), support.y)
        task = Task(support, Split(jax.random.normal(jax.random.key(2), (6, 3), jnp.float64),
                                   jnp.arange(6) % 3), {})  # fmt: skip
        grads, _ = jax.jit(net.meta_grad)(params, task, jax.random.key(3))
        flat, unravel = jax.flatten_util.ravel_pytree(params)
        analytic = np.asarray(jax.flatten_util.ravel_pytree(grads)[0])
        picks = np.random.default_rng(0).choice(flat.size, 40, replace=False)

        @jax.jit  # one compiled call per perturbation, not an op-by-op trace
        def loss(v):
            return net.meta_loss(unravel(v), task, jax.random.key(3))[0]

        eps = 1e-6
        numeric = [(loss(flat.at[i].add(eps)) - loss(flat.at[i].add(-eps))) / (2 * eps)
                   for i in picks]  # fmt: skip
        np.testing.assert_allclose(analytic[picks], numeric, rtol=1e-6, atol=1e-9)
        assert np.abs(np.asarray(jax.flatten_util.ravel_pytree(grads["fce"])[0])).max() > 1e-4

    net = MatchingNet(linear(8, 8), fce_dim=8, fce_steps=2)
    before, after = accuracy_before_and_after_training(net)
    assert after > before + 0.15 and after > 0.75, (before, after)


def test_fce_is_a_config_setting():
    from metajax.config import override

    config = override(get_config("omniglot-minimal-matchingnet"), ["fce=true", "fce_steps=2"])
    assert config.learner.fce and config.learner.fce_steps == 2
