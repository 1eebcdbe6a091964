"""'fast': per-example gradients from each layer's activations and output gradients
("book-keeping", Bu et al. 2023), kept per example, then clipped and summed.

vmap(grad) ('vmap') makes XLA compute a convolution's per-example kernel gradient as a
convolution with one feature group per example, which XLA:CPU runs several times slower
than the batch convolution. Here one recorded forward and one backward to the layers'
outputs (tape.py) give every layer's input and output gradient, and each layer's rule
(layer_rules.py) forms its per-example gradient in the pieces it computes it in (per
kernel tap), takes their squared norms, and, once the clip factors are known, sums
those same pieces with them. Fastest on CPU; memory about B x #params.

Privacy: the same contract and bound as the reference (registry.py): the norm that
sets an example's clip factor is the norm of exactly the float32 tensors that are
scaled and added (layer_rules.LayerParts, docs/privacy.md, invariant 11), and a padding slot
or a non-finite example contributes exactly zero (per_example.clip_factors).
"""
from typing import Any, Callable

import jax
import jax.numpy as jnp

from image_classification.privacy.clipped_sums import per_example
from image_classification.privacy.clipped_sums import registry
from image_classification.privacy.clipped_sums import tape

PyTree = Any


def _per_example_tree(params: PyTree, rec: tape.Recording, batch: int) -> PyTree:
  per_call = [c.rule.grads(c, tape.subtree(params, c.path), x, dy)
              for c, x, dy in zip(rec.calls, rec.inputs, rec.out_grads)]
  return tape.assemble(params, rec.calls, per_call, batch)


def per_example_grads(loss_fn: Callable[..., jax.Array], params: PyTree, views,
                      labels, keys):
  """Same arguments and result as ``vmap.per_example_grads``, from the tape.

  ``loss_fn(params, views_k, label, key)`` is the mean loss over the K views of ONE
  example and must apply a Flax model to ``params`` (a dict of module names).
  Returns (grads with [B, ...] leaves, losses [B]).
  """
  rec = tape.record(loss_fn, params, views, labels, keys)
  return _per_example_tree(params, rec, labels.shape[0]), rec.losses


def has_shared_parameters(rec: tape.Recording) -> bool:
  """Whether some module was called more than once (weight sharing)."""
  paths = [c.path for c in rec.calls]
  return len(set(paths)) != len(paths)


def shared_parameters_sum(params: PyTree, rec: tape.Recording, mask, clipping_norm):
  """The clipped sum when a parameter is used by several calls: their per-call
  gradients must be added before the norm is taken, so the exact per-example tree is
  formed (rare: weight sharing). Returns (sum, norms, valid, losses)."""
  grads = _per_example_tree(params, rec, mask.shape[0])
  return (*per_example.clipped_tree_sum(grads, mask, clipping_norm,
                                        mask_only_if_nonfinite=True), rec.losses)


@registry.register('fast')
def clipped_sum(loss_fn: Callable[..., jax.Array], params: PyTree, views, labels, keys,
                mask, clipping_norm: float):
  """The registry's contract (registry.py), keeping every layer's per-example pieces."""
  rec = tape.record(loss_fn, params, views, labels, keys)
  if has_shared_parameters(rec):
    return shared_parameters_sum(params, rec, mask, clipping_norm)
  parts = [c.rule.layer_parts(c, tape.subtree(params, c.path), x, dy)
           for c, x, dy in zip(rec.calls, rec.inputs, rec.out_grads)]
  norms = jnp.sqrt(sum(p.sq_norms for p in parts))
  factors, valid = per_example.clip_factors(norms, mask, clipping_norm)
  # The zeroing pass only when some norm is not finite (a NaN times a zero factor is
  # still NaN); otherwise a zero factor already removes a padding slot exactly.
  per_call = jax.lax.cond(
      per_example.all_finite(norms), lambda: [p.weighted_sum(factors) for p in parts],
      lambda: [p.weighted_sum(factors, valid) for p in parts])
  return tape.assemble(params, rec.calls, per_call, None), norms, valid, rec.losses
