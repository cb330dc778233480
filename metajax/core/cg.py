"""Conjugate gradient on pytrees, for a fixed number of steps (a ``lax.fori_loop``).

Solves ``A x = b`` for a symmetric positive-definite ``A`` given only as ``matvec(x) = A x``
(Hestenes and Stiefel 1952). A fixed step count keeps the cost static and ``vmap``-friendly;
a step whose curvature or residual is zero (the system is solved) leaves ``x`` unchanged
instead of dividing by zero.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import optax

from metajax.core.types import Params


def _dot(a: Params, b: Params) -> jax.Array:
    return sum(jnp.vdot(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True))


def conjugate_gradient(matvec: Callable[[Params], Params], b: Params, steps: int) -> Params:
    """``steps`` iterations of conjugate gradient from ``x = 0``.

    Args:
      matvec: ``x -> A x`` for a symmetric positive-definite ``A``, on pytrees shaped like
        ``b``.
      b: the right-hand side.
      steps: iterations (static); in exact arithmetic ``dim(b)`` of them solve the system.

    Returns:
      The approximate solution ``x``, shaped like ``b``.

    Example:
      >>> import jax.numpy as jnp
      >>> a = jnp.array([[4.0, 1.0], [1.0, 3.0]])
      >>> x = conjugate_gradient(lambda v: a @ v, jnp.array([1.0, 2.0]), steps=2)
      >>> [round(float(v), 4) for v in x]  # a^-1 b = [1/11, 7/11]
      [0.0909, 0.6364]
    """
    x = jax.tree.map(jnp.zeros_like, b)
    r = b
    p = b
    rs = _dot(r, r)

    def body(_, carry):
        x, r, p, rs = carry
        ap = matvec(p)
        curvature = _dot(p, ap)
        alpha = jnp.where(curvature > 0, rs / jnp.where(curvature > 0, curvature, 1.0), 0.0)
        x = optax.tree.add_scale(x, alpha, p)
        r = optax.tree.add_scale(r, -alpha, ap)
        rs_new = _dot(r, r)
        beta = jnp.where(rs > 0, rs_new / jnp.where(rs > 0, rs, 1.0), 0.0)
        p = optax.tree.add_scale(r, beta, p)
        return x, r, p, rs_new

    x, *_ = jax.lax.fori_loop(0, steps, body, (x, r, p, rs))
    return x
