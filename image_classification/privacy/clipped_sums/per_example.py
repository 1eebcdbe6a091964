"""Per-example norms, clip factors and weighted sums: the arithmetic that bounds the
sensitivity, written once for every implementation.

Every real example (mask True) whose norm is finite is scaled by min(1, C / norm), so
its contribution has norm at most C; a padding slot or an example with a non-finite
norm gets factor 0 and, where its values may be non-finite, is replaced by zeros before
the sum (a NaN times zero is still NaN). Norms, factors and sums are float32 (at least),
whatever the dtype the model computes in: a narrower sum, or narrower factors, could add
more than C for an example.

Precision: on accelerators a float32 contraction may run in TF32 or bfloat16 passes by
default (a 10- or 8-bit mantissa for its operands), so the sum would add a rounded
copy of an example's vector, whose norm can exceed the one that set its clip factor.
Every contraction that forms a per-example piece or the clipped sum (``weighted_sum``
here, the layer rules' products for 'fast' and 'ghost') asks for ``HIGHEST``: full
float32 (docs/privacy.md, invariant 11; tests/privacy/clipped_sums/test_precision.py
reads it from the lowered program). Squared norms are elementwise products and sums,
always float32.
"""
from typing import Any, Optional

import jax
import jax.numpy as jnp

PyTree = Any

# The precision of every contraction of the clipping arithmetic: full float32.
HIGHEST = jax.lax.Precision.HIGHEST


def sq_norms(x: jax.Array) -> jax.Array:
  """Per-example sum of squares in float32: [B, ...] -> [B]."""
  x = x.reshape(x.shape[0], -1).astype(jnp.float32)
  return jnp.sum(x * x, axis=1)


def global_norms(per_example_tree: PyTree) -> jax.Array:
  """L2 norm of each example's whole gradient: [B, ...] leaves -> [B]."""
  return jnp.sqrt(sum(sq_norms(x) for x in jax.tree_util.tree_leaves(per_example_tree)))


def clip_factors(norms: jax.Array, mask: jax.Array, clipping_norm: float):
  """Scale per example: min(1, C / norm) for real examples with a finite norm, else 0.

  Returns (factors [B], valid [B]) where valid marks examples that contribute.
  """
  valid = jnp.logical_and(mask, jnp.isfinite(norms))
  safe = jnp.where(valid, norms, 1.0)
  factors = jnp.minimum(1.0, clipping_norm / jnp.maximum(safe, 1e-12))
  return jnp.where(valid, factors, 0.0), valid


def all_finite(norms: jax.Array) -> jax.Array:
  return jnp.all(jnp.isfinite(norms))


def zero_invalid(x: jax.Array, valid: jax.Array) -> jax.Array:
  """``x`` [B, ...] with the examples where ``valid`` is False replaced by zeros."""
  return jnp.where(valid.reshape((-1,) + (1,) * (x.ndim - 1)), x, jnp.zeros((), x.dtype))


def weighted_sum(factors: jax.Array, x: jax.Array,
                 valid: Optional[jax.Array] = None) -> jax.Array:
  """sum_i factors_i * x_i over the leading axis, in x's dtype (float32 here) at full
  precision (HIGHEST, never TF32); with ``valid``, the invalid examples are zeroed
  first."""
  if valid is not None:
    x = zero_invalid(x, valid)
  return jnp.tensordot(factors.astype(x.dtype), x, axes=1, precision=HIGHEST)


def clipped_tree_sum(per_example_tree: PyTree, mask: jax.Array, clipping_norm: float,
                     mask_only_if_nonfinite: bool = False):
  """Clips each example of a [B, ...] tree to norm C and sums over the batch.

  Returns (sum tree, norms [B], valid [B]). Leaves are promoted to float32 (at least)
  first. ``mask_only_if_nonfinite`` skips the zeroing pass unless some norm is not
  finite (a zero factor already removes a finite padding slot exactly): the same
  result, one pass less over the per-example gradients, which XLA:CPU does not fuse
  into the dot.
  """
  norms = global_norms(per_example_tree)
  factors, valid = clip_factors(norms, mask, clipping_norm)
  tree = jax.tree_util.tree_map(
      lambda x: x.astype(jnp.promote_types(x.dtype, jnp.float32)), per_example_tree)

  def summed(zeroed: Optional[jax.Array]):
    return jax.tree_util.tree_map(lambda x: weighted_sum(factors, x, zeroed), tree)

  if mask_only_if_nonfinite:
    out = jax.lax.cond(all_finite(norms), lambda: summed(None), lambda: summed(valid))
  else:
    out = summed(valid)
  return out, norms, valid
