"""'vmap': the reference implementation. vmap(grad) gives every example's gradient as
a [B, ...] tree, which is then clipped and summed (``per_example.clipped_tree_sum``).

Augmult: the K views' gradients of one example are averaged BEFORE clipping (the loss
is the mean over the views, and the gradient is linear), so the bound is C per example,
not K*C. Simple and exact; memory about B x #params, and for convolutions XLA:CPU
computes each example's kernel gradient as a grouped convolution, which is slow.
"""
from typing import Any, Callable

import jax

from image_classification.privacy.clipped_sums import per_example
from image_classification.privacy.clipped_sums import registry

PyTree = Any


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


@registry.register('vmap')
def clipped_sum(loss_fn: Callable[..., jax.Array], params: PyTree, views, labels, keys,
                mask, clipping_norm: float):
  """The registry's contract (registry.py), by vmap(grad) then clip and sum."""
  grads, losses = per_example_grads(loss_fn, params, views, labels, keys)
  return (*per_example.clipped_tree_sum(grads, mask, clipping_norm), losses)
