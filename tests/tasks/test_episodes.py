"""Property tests of the on-device episode sampler."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from metajax import sample_tasks
from metajax.datasets.images import ClassImages
from metajax.tasks.episodes import Episodes


def _coded_data(counts, groups):
    """Image of class c, example e: pixel (0,0) = c, pixel (0,1) = e + 1 (0 marks padding)."""
    per_class = []
    for c, n in enumerate(counts):
        x = np.zeros((n, 4, 4, 1), np.uint8)
        x[:, 0, 0, 0] = c
        x[:, 0, 1, 0] = np.arange(n) + 1
        per_class.append(x)
    return ClassImages.from_lists(
        per_class, [f"g{g}/c{c}" for c, g in enumerate(groups)], [f"g{g}" for g in groups]
    )


def _decode(split):
    px = np.rint(np.asarray(split.x) * 255).astype(int)
    return px[..., 0, 0, 0], px[..., 0, 1, 0], np.asarray(split.y)


@st.composite
def settings_(draw):
    num_groups = draw(st.integers(1, 4))
    groups = [draw(st.integers(0, num_groups - 1)) for _ in range(draw(st.integers(3, 14)))]
    counts = [draw(st.integers(3, 9)) for _ in groups]
    k_shot = draw(st.integers(1, 2))
    k_query = draw(st.integers(1, min(counts) - k_shot))
    within = draw(st.booleans())
    largest = max(np.bincount(groups)) if within else len(groups)
    n_way = draw(st.integers(1, largest))
    return counts, groups, n_way, k_shot, k_query, within, draw(st.integers(0, 2**31 - 1))


@settings(max_examples=25, deadline=None)
@given(settings_())
def test_episode_properties(setting):
    counts, groups, n_way, k_shot, k_query, within, seed = setting
    dist = Episodes(_coded_data(counts, groups), n_way, k_shot, k_query, within_group=within)
    task = dist.sample(jax.random.key(seed))
    chex.assert_shape(task.support.x, (n_way * k_shot, 4, 4, 1))
    chex.assert_shape(task.query.x, (n_way * k_query, 4, 4, 1))
    s_cls, s_ex, s_y = _decode(task.support)
    q_cls, q_ex, q_y = _decode(task.query)
    # Labels in range, balanced: each label k_shot times in support, k_query times in query.
    assert sorted(np.bincount(s_y, minlength=n_way).tolist()) == [k_shot] * n_way
    assert sorted(np.bincount(q_y, minlength=n_way).tolist()) == [k_query] * n_way
    # One class per label, the same in support and query, and n_way distinct classes.
    label_class = {}
    for cls, y in zip(np.concatenate([s_cls, q_cls]), np.concatenate([s_y, q_y]), strict=True):
        assert label_class.setdefault(int(y), int(cls)) == cls
    assert len(set(label_class.values())) == n_way
    # Real examples only (no padding), never the same example twice in an episode.
    assert (s_ex >= 1).all() and (q_ex >= 1).all()
    assert all(
        e <= counts[c]
        for c, e in zip(np.concatenate([s_cls, q_cls]), np.concatenate([s_ex, q_ex]), strict=True)
    )
    pairs = list(
        zip(
            np.concatenate([s_cls, q_cls]).tolist(),
            np.concatenate([s_ex, q_ex]).tolist(),
            strict=True,
        )
    )
    assert len(set(pairs)) == len(pairs)
    if within:
        assert len({groups[c] for c in label_class.values()}) == 1
    # Determinism given the key.
    chex.assert_trees_all_equal(task, dist.sample(jax.random.key(seed)))


def test_labels_are_a_random_permutation_and_classes_vary():
    dist = Episodes(_coded_data([5] * 10, [0] * 10), 5, 1, 1)
    tasks = jax.jit(lambda k: sample_tasks(dist, k, 200))(jax.random.key(0))
    first_label = np.asarray(tasks.info["labels"])[:, 0]
    assert set(first_label.tolist()) == set(range(5))
    chosen = np.asarray(tasks.info["classes"]).ravel()
    assert set(chosen.tolist()) == set(range(10))


def test_rotations_make_new_classes():
    x = np.arange(16, dtype=np.uint8).reshape(1, 4, 4, 1).repeat(3, 0)
    data = ClassImages.from_lists([x, x + 100], ["a", "b"], ["g", "g"])
    dist = Episodes(data, n_way=8, k_shot=1, k_query=1, rotations=True)
    assert dist.num_classes == 8
    task = dist.sample(jax.random.key(3))
    base, rot = np.asarray(task.info["classes"]), np.asarray(task.info["rotations"])
    assert len(set(zip(base.tolist(), rot.tolist(), strict=True))) == 8
    labels = np.asarray(task.info["labels"])
    for i in range(8):
        got = np.asarray(task.support.x)[np.asarray(task.support.y) == labels[i]][0]
        want = np.rot90(x[0] + 100 * base[i], rot[i], axes=(0, 1)) / 255.0
        np.testing.assert_allclose(got, want, atol=1e-6)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"n_way": 5}, r"5-way episode needs 5 distinct classes, but the data set has 3"),
        (
            {"n_way": 2, "k_shot": 3, "k_query": 2},
            r"needs 5 examples per class, but class 'g0/c1' has only 4",
        ),
        ({"n_way": 3, "within_group": True}, r"has 2 in its largest group"),
        ({"n_way": 0}, r">= 1"),
    ],
)
def test_impossible_episodes_fail_before_compiling(kwargs, message):
    data = _coded_data([6, 4, 5], [0, 0, 1])
    args = {"n_way": 2, "k_shot": 1, "k_query": 1, **kwargs}
    with pytest.raises(ValueError, match=message):
        Episodes(data, **args)


def test_meta_batch_sampling_makes_no_host_transfer():
    dist = Episodes(_coded_data([6] * 8, [0, 1] * 4), 4, 1, 2, within_group=True, rotations=True)
    fn = jax.jit(lambda k: sample_tasks(dist, k, 16))
    key = jax.random.key(0)
    fn(key)  # compile outside the guard; constants are placed once
    with jax.transfer_guard("disallow"):
        out = fn(key)
    assert out.support.x.shape == (16, 4, 4, 4, 1)
    assert jnp.isfinite(out.query.x).all()
