"""Per-example gradients and clipping: the part of DP-SGD that bounds sensitivity.

The contract of ``clipped_sum``: each real example (mask True) contributes a vector of
L2 norm at most C to the sum; padding slots and examples whose gradient is not finite
contribute exactly zero. So adding or removing one example moves the sum by at most C,
and replacing one moves it by at most 2C. With augmentation multiplicity, the K views'
gradients of one example are averaged BEFORE clipping, so the bound is still C per
example, not K*C.
"""
from typing import Any, Callable

import jax
import jax.numpy as jnp

PyTree = Any


def global_norms(per_example_tree: PyTree) -> jax.Array:
  """L2 norm of each example's whole gradient: [B, ...] leaves -> [B]."""
  leaves = jax.tree_util.tree_leaves(per_example_tree)
  squares = [jnp.sum(jnp.reshape(x, (x.shape[0], -1)).astype(jnp.float32) ** 2, axis=1)
             for x in leaves]
  return jnp.sqrt(sum(squares))


def clip_factors(norms: jax.Array, mask: jax.Array, clipping_norm: float):
  """Scale per example: min(1, C / norm) for real examples with a finite norm, else 0.

  Returns (factors [B], valid [B]) where valid marks examples that contribute.
  """
  valid = jnp.logical_and(mask, jnp.isfinite(norms))
  safe = jnp.where(valid, norms, 1.0)
  factors = jnp.minimum(1.0, clipping_norm / jnp.maximum(safe, 1e-12))
  return jnp.where(valid, factors, 0.0), valid


def clipped_sum(per_example_tree: PyTree, mask: jax.Array, clipping_norm: float):
  """Clips each example to norm C and sums over the batch.

  Returns (sum tree, norms [B], valid [B]). Non-finite per-example gradients are
  zeroed before the sum (a NaN times zero is still NaN, so they are replaced, not
  scaled).
  """
  norms = global_norms(per_example_tree)
  factors, valid = clip_factors(norms, mask, clipping_norm)

  def weighted_sum(x):
    # Summed in float32 (at least), the precision of the norms: a narrower sum, or
    # narrower clip factors, could add more than C for an example.
    x = x.astype(jnp.promote_types(x.dtype, jnp.float32))
    x = jnp.where(valid.reshape((-1,) + (1,) * (x.ndim - 1)), x, 0.0)
    return jnp.tensordot(factors.astype(x.dtype), x, axes=1)

  return jax.tree_util.tree_map(weighted_sum, per_example_tree), norms, valid


def per_example_grads(loss_fn: Callable[..., jax.Array], params: PyTree, views,
                      labels, keys):
  """Gradient of each example's loss, averaged over its K views.

  ``loss_fn(params, views_k [K, ...], label, key) -> scalar`` is the mean loss over
  the K views of ONE example; by linearity its gradient is the mean of the K views'
  gradients. vmap over the batch gives [B, ...] leaves.
  Returns (grads, losses [B]).
  """
  grad_fn = jax.value_and_grad(loss_fn)
  losses, grads = jax.vmap(grad_fn, in_axes=(None, 0, 0, 0))(params, views, labels, keys)
  return grads, losses
