"""'ghost': the 'fast' clipped sum without keeping any per-example gradient.

Pass 1 accumulates each example's squared norm layer by layer: from the layer rule's
``ghost_sq_norms`` where it has one that is exact (a Dense layer that sees one vector
per example: |x|^2 |dy|^2, Goodfellow 2015 / Li et al. 2022), else from the layer's
gradient for ONE example at a time, formed and dropped. Pass 2 recomputes each
example's layer gradient with the same code on the same values and accumulates it with
its clip factor (the one-vector Dense layers: one batch matmul with scaled output
gradients). No second backward pass through the network and no per-example buffer
beyond one example's gradient of one layer, at the price of computing the per-example
weight gradients twice, in loops over the examples.

Privacy: the same contract and bound as the reference (registry.py). The norm that
sets an example's factor is the norm of the array that is scaled and added: both passes
run the same ``LayerParts`` code on one example, whose tensors sit behind an
optimisation barrier, so XLA computes the same operation on the same values to the
same bits and neither pass is rewritten into a differently rounded form
(tests/privacy/clipped_sums/test_sensitivity.py measures each example's contribution
under inputs built for float cancellation).
"""
from typing import Any, Callable

import jax
import jax.numpy as jnp

from image_classification.privacy.clipped_sums import fast
from image_classification.privacy.clipped_sums import per_example
from image_classification.privacy.clipped_sums import registry
from image_classification.privacy.clipped_sums import tape

PyTree = Any


def _example(tree):
  """One example's slice of a [B, ...] tree, as a batch of one."""
  return jax.tree_util.tree_map(lambda t: t[None], tree)


def _one_by_one_sq_norms(call: tape.Call, params: dict, inputs: list, dy) -> jax.Array:
  """Pass 1 for one layer: each example's squared norm, computed from that example's
  ``layer_parts`` alone (memory: one example's gradient of this layer)."""
  def one(operands):
    return call.rule.layer_parts(call, params, *_example(operands)).sq_norms[0]
  return jax.lax.map(one, (inputs, dy))


def _one_by_one_weighted_sum(call: tape.Call, params: dict, inputs: list, dy,
                             factors) -> dict:
  """Pass 2 for one layer: sum_i factors_i * (example i's ``layer_parts``),
  accumulated one example at a time, with the same code as pass 1."""
  def term(operands, factor):
    return call.rule.layer_parts(call, params, *_example(operands)).weighted_sum(
        factor[None])

  def body(total, xs):
    operands, factor = xs
    return jax.tree_util.tree_map(jnp.add, total, term(operands, factor)), None

  first = term(jax.tree_util.tree_map(lambda t: t[0], (inputs, dy)), factors[0])
  rest = jax.tree_util.tree_map(lambda t: t[1:], ((inputs, dy), factors))
  return jax.lax.scan(body, first, rest)[0]


@registry.register('ghost')
def clipped_sum(loss_fn: Callable[..., jax.Array], params: PyTree, views, labels, keys,
                mask, clipping_norm: float):
  """The registry's contract (registry.py), with no per-example buffer kept."""
  rec = tape.record(loss_fn, params, views, labels, keys)
  if fast.has_shared_parameters(rec):
    return fast.shared_parameters_sum(params, rec, mask, clipping_norm)
  calls, inputs, out_grads = rec.calls, rec.inputs, rec.out_grads
  layer_params = [tape.subtree(params, c.path) for c in calls]
  # Pass 1: squared norms, layer by layer.
  ghost = [c.rule.ghost_sq_norms(c, x, dy) if c.rule.ghost_sq_norms else None
           for c, x, dy in zip(calls, inputs, out_grads)]
  sq = jnp.zeros(labels.shape[:1], jnp.float32)
  for call, p, x, dy, g in zip(calls, layer_params, inputs, out_grads, ghost):
    sq = sq + (_one_by_one_sq_norms(call, p, x, dy) if g is None else g)
  norms = jnp.sqrt(sq)
  factors, valid = per_example.clip_factors(norms, mask, clipping_norm)

  def clean(tensors):  # zero the invalid examples' inputs and output gradients
    return jax.tree_util.tree_map(lambda t: per_example.zero_invalid(t, valid), tensors)

  inputs, out_grads = jax.lax.cond(per_example.all_finite(norms), lambda t: t, clean,
                                   (inputs, out_grads))
  # Pass 2: each example's tensors again, by the same code on the same values (so the
  # very vectors whose norms gave the factors), accumulated with the factors.
  per_call = []
  for call, p, x, dy, g in zip(calls, layer_params, inputs, out_grads, ghost):
    if g is not None:
      per_call.append(call.rule.ghost_sum(call, x, dy, factors))
    else:
      per_call.append(_one_by_one_weighted_sum(call, p, x, dy, factors))
  return tape.assemble(params, calls, per_call, None), norms, valid, rec.losses
