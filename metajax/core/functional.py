"""Models as pure functions: ``init(key) -> params`` and ``apply(params, x) -> y``.

Meta-learning differentiates through parameter updates, so a model must be a pure function
of an explicit parameter pytree. `Model` is that pair of functions; the adapters below build
one from a Flax NNX module (the API Flax recommends), a Flax Linen module, or plain functions.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import chex
import jax
import jax.numpy as jnp
from flax import nnx

from metajax.core.types import Params


@dataclasses.dataclass(frozen=True)
class Model:
    """A model as two pure functions.

    Attributes:
      init: ``init(key) -> params``, a fresh parameter pytree.
      apply: ``apply(params, x) -> y``, batched over the leading axis of ``x`` (models of
        sets take more arguments: ``apply(params, x, y, mask)``).
    """

    init: Callable[[chex.PRNGKey], Params]
    apply: Callable[..., Any]

    def __call__(self, params: Params, x: chex.Array, *args: Any) -> Any:
        return self.apply(params, x, *args)


def from_nnx(module_factory: Callable[[nnx.Rngs], nnx.Module] | nnx.Module) -> Model:
    """Turns a Flax NNX module into a `Model` by ``nnx.split`` / ``nnx.merge``.

    ``apply(params, x, *args, **kwargs)`` calls the module with every argument (a set
    encoder takes ``(x, y, mask)``). The parameters are the module's ``nnx.Param`` variables, as a plain nested dict
    (``nnx.State.to_pure_dict()``), for example ``params["out"]["kernel"]``.
    Any other state (constants, non-trainable variables) is held fixed and is not
    differentiated. The module must not mutate state in ``__call__`` (use batch statistics
    without running averages, as `metajax.models.Conv4` does).

    Args:
      module_factory: a function ``rngs -> module`` (preferred: ``init`` then draws fresh
        weights from its key), or a module instance (``init`` then returns its current
        parameters whatever the key).

    Returns:
      A `Model`.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from flax import nnx
      >>> model = from_nnx(lambda rngs: nnx.Linear(3, 2, rngs=rngs))
      >>> params = model.init(jax.random.key(0))
      >>> model.apply(params, jnp.ones((4, 3))).shape
      (4, 2)
    """
    if isinstance(module_factory, nnx.Module):
        graphdef, state, rest = nnx.split(module_factory, nnx.Param, ...)
        fixed_params = nnx.to_pure_dict(state)

        def init(key: chex.PRNGKey) -> Params:
            del key
            return fixed_params

    else:
        graphdef, state, rest = nnx.split(module_factory(nnx.Rngs(0)), nnx.Param, ...)

        def init(key: chex.PRNGKey) -> Params:
            return nnx.to_pure_dict(nnx.split(module_factory(nnx.Rngs(key)), nnx.Param, ...)[1])

    # Params are plain nested dicts: cheaper to flatten at every jit dispatch than nnx.State,
    # and readable (params["out"]["kernel"]). Rebuilding the State is a reshuffle of leaves,
    # valid because both pytrees order leaves by the same sorted paths (checked here).
    treedef = jax.tree.structure(state)
    pure_leaves = jax.tree.leaves(nnx.to_pure_dict(state))
    if len(pure_leaves) != len(jax.tree.leaves(state)) or any(
        a is not b for a, b in zip(pure_leaves, jax.tree.leaves(state), strict=True)
    ):
        raise ValueError("from_nnx: this module's parameter paths do not map to a plain dict.")

    def apply(params: Params, x: chex.Array, *args: Any, **kwargs: Any) -> Any:
        module_state = jax.tree.unflatten(treedef, jax.tree.leaves(params))
        return nnx.merge(graphdef, module_state, rest)(x, *args, **kwargs)

    return Model(init=init, apply=apply)


def from_linen(module: Any, example_x: chex.Array) -> Model:
    """Turns a Flax Linen module into a `Model`.

    The ``"params"`` collection is the parameter pytree; other collections from
    ``module.init`` are held fixed.

    Args:
      module: a ``flax.linen.Module``.
      example_x: an input batch with the right shape, used to initialize.

    Returns:
      A `Model`.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> import flax.linen as nn
      >>> model = from_linen(nn.Dense(2), jnp.ones((1, 3)))
      >>> model.apply(model.init(jax.random.key(0)), jnp.ones((4, 3))).shape
      (4, 2)
    """
    other = {k: v for k, v in module.init(jax.random.key(0), example_x).items() if k != "params"}

    def init(key: chex.PRNGKey) -> Params:
        return module.init(key, example_x)["params"]

    def apply(params: Params, x: chex.Array) -> chex.Array:
        return module.apply({"params": params, **other}, x)

    return Model(init=init, apply=apply)


def from_function(
    apply: Callable[[Params, chex.Array], chex.Array],
    init: Callable[[chex.PRNGKey], Params],
) -> Model:
    """Wraps a plain ``apply(params, x)`` and ``init(key)`` into a `Model`.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> model = from_function(lambda p, x: x @ p["w"],
      ...                       lambda key: {"w": jax.random.normal(key, (3, 1))})
      >>> model.apply(model.init(jax.random.key(0)), jnp.ones((4, 3))).shape
      (4, 1)
    """
    return Model(init=init, apply=apply)


def mixed_precision(model: Model, compute_dtype: Any = jnp.bfloat16) -> Model:
    """The same model computing in ``compute_dtype`` while its parameters stay float32.

    ``apply`` casts the floating-point parameters and inputs to ``compute_dtype``, runs the
    model, and casts the output back to float32. The casts are differentiable, so inner-loop
    and meta-gradients arrive in float32 and every update (inner SGD, outer Adam) and the
    optimizer state stay float32: the "master weights" recipe of Micikevicius et al. 2018.

    Args:
      model: any `Model`.
      compute_dtype: the dtype of the forward and backward passes (``jnp.bfloat16``).

    Returns:
      A `Model` with the same ``init`` and parameters.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from metajax.models import MLP
      >>> model = mixed_precision(from_nnx(lambda r: MLP(1, 1, rngs=r)))
      >>> params = model.init(jax.random.key(0))
      >>> jax.tree.leaves(params)[0].dtype, model.apply(params, jnp.ones((2, 1))).dtype
      (dtype('float32'), dtype('float32'))
    """

    def cast(tree, dtype):
        return jax.tree.map(
            lambda a: a.astype(dtype) if jnp.issubdtype(a.dtype, jnp.floating) else a, tree
        )

    def apply(params: Params, x: chex.Array) -> chex.Array:
        return cast(model.apply(cast(params, compute_dtype), cast(x, compute_dtype)), jnp.float32)

    return Model(model.init, apply)


def partition_params(params: Params, predicate: Callable[[str], bool]) -> tuple[Params, Params]:
    """Splits a nested-dict parameter tree in two by the keys on each leaf's path.

    Args:
      params: a nested dict of arrays (the parameters of `from_nnx` and `from_linen`).
      predicate: ``predicate(key)`` on every key of a leaf's path (as a string); the leaf
        goes to the first tree when it holds for any of them.

    Returns:
      ``(selected, rest)``: two nested dicts with the same nesting and no empty branches;
      `merge_params` puts them back together.

    Example:
      >>> params = {"norm": {"scale": 1.0}, "dense": {"kernel": 2.0, "bias": 3.0}}
      >>> partition_params(params, lambda key: "norm" in key)
      ({'norm': {'scale': 1.0}}, {'dense': {'kernel': 2.0, 'bias': 3.0}})
    """

    def split(tree: Any, inside: bool) -> tuple[Any, Any]:
        if not isinstance(tree, dict):
            return (tree, None) if inside else (None, tree)
        selected, rest = {}, {}
        for key, sub in tree.items():
            a, b = split(sub, inside or predicate(str(key)))
            if a is not None and not (isinstance(a, dict) and not a):
                selected[key] = a
            if b is not None and not (isinstance(b, dict) and not b):
                rest[key] = b
        return selected, rest

    return split(params, False)


def merge_params(a: Params, b: Params) -> Params:
    """The union of two nested dicts with disjoint leaves (the inverse of `partition_params`).

    Example:
      >>> merge_params({"norm": {"scale": 1.0}}, {"norm": {"bias": 0.0}, "head": 2.0})
      {'norm': {'scale': 1.0, 'bias': 0.0}, 'head': 2.0}
    """
    out = dict(a)
    for key, value in b.items():
        if key in out:
            if not (isinstance(out[key], dict) and isinstance(value, dict)):
                raise ValueError(f"merge_params: the key {key!r} holds a leaf in both trees.")
            out[key] = merge_params(out[key], value)
        else:
            out[key] = value
    return out
