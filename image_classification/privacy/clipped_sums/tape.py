"""The tape: one recorded forward pass and one backward pass to the layers' outputs.

A Flax method interceptor records, for every call of a module that owns trainable
parameters, the call's inputs and the layer rule that will turn them into per-example
gradients (layer_rules.rule_for), and adds a zero "perturbation" to the call's output.
The forward still vmaps the loss over the examples, so dropout keys and losses are
exactly the reference's. The gradient w.r.t. the perturbations is each layer's output
gradient dL_i/dy for every example i (example i's loss depends on example i's
activations only); no parameter gradient is computed, no second backward pass is needed.

Privacy: nothing here mixes examples. Inside shard_map the perturbations are made
device-varying, so that no output gradient is summed across devices before clipping.

Not supported: modules run inside lifted transforms (``nn.remat``, ``nn.scan``, ...);
a parameter-owning module whose method other than ``__call__`` is called from outside
is refused with an error. Use the reference 'vmap' implementation for such models.
"""
import dataclasses
from typing import Any, Callable, NamedTuple, Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from image_classification.privacy.clipped_sums import layer_rules

PyTree = Any


@dataclasses.dataclass
class Call:
  """What the interceptor saw of one call of a parameter-owning module."""
  rule: layer_rules.LayerRule
  path: tuple
  module: nn.Module         # an unbound clone, for re-running the module
  own: tuple                # names of the parameters the module owns directly
  treedef: Any              # of (args, kwargs)
  static: list              # non-array leaves of (args, kwargs), None for arrays
  is_array: list


class Recording(NamedTuple):
  """calls; inputs: per call, the array arguments [B, ...]; out_grads: per call, the
  output gradient [B, ...]; losses [B]."""
  calls: list
  inputs: list
  out_grads: list
  losses: jax.Array


def subtree(params: PyTree, path: Sequence[str]) -> Optional[dict]:
  node = params
  for name in path:
    if not isinstance(node, dict) or name not in node:
      return None
    node = node[name]
  return node if isinstance(node, dict) else None


def _own_names(params: PyTree, path) -> tuple:
  node = subtree(params, path)
  if node is None:
    return ()
  return tuple(k for k, v in node.items() if not isinstance(v, dict))


class Tape:
  """Records parameter-owning module calls; adds the perturbations to their outputs."""

  def __init__(self, params: PyTree, perturbations: Optional[list] = None):
    self.params = params
    self.perturbations = perturbations
    self.calls: list[Call] = []
    self.inputs: list[list] = []
    self.outputs: list = []
    self._active: list = []  # modules whose __call__ is running

  def interceptor(self, next_fun, args, kwargs, context):
    module = context.module
    own = _own_names(self.params, module.path) if module.scope is not None else ()
    if not own:
      return next_fun(*args, **kwargs)
    if context.method_name == 'setup':
      return next_fun(*args, **kwargs)
    if context.method_name != '__call__':
      if not any(m is module for m in self._active):
        raise NotImplementedError(
            f'fast per-example gradients: method {context.method_name!r} of module '
            f'{"/".join(module.path)} ({type(module).__name__}) is called from outside '
            "its __call__; use the reference 'vmap' implementation for this model")
      return next_fun(*args, **kwargs)
    self._active.append(module)
    try:
      out = next_fun(*args, **kwargs)
    finally:
      self._active.pop()
    leaves, treedef = jax.tree_util.tree_flatten((args, kwargs))
    is_array = [isinstance(x, (jax.Array, np.ndarray)) for x in leaves]
    index = len(self.calls)
    self.calls.append(Call(
        rule=layer_rules.rule_for(module, own), path=tuple(module.path),
        module=module.clone(parent=None), own=own, treedef=treedef,
        static=[None if a else x for x, a in zip(leaves, is_array)],
        is_array=is_array))
    self.inputs.append([x for x, a in zip(leaves, is_array) if a])
    self.outputs.append(out)
    if self.perturbations is not None:
      out = jax.tree_util.tree_map(jnp.add, out, self.perturbations[index])
    return out


def _varying_axes(x) -> tuple:
  """The mesh axes along which ``x`` varies inside shard_map (() outside it)."""
  manual = getattr(jax.typeof(x), 'manual_axis_type', None)
  return tuple(sorted(getattr(manual, 'varying', ()) or ()))


def _pcast_varying(x, axes: tuple):
  return jax.lax.pcast(x, axes, to='varying') if axes else x


def record(loss_fn: Callable, params: PyTree, views, labels, keys) -> Recording:
  """Runs the recorded forward and the backward w.r.t. the layers' outputs."""
  def one(perturbations, v, y, k):
    tape = Tape(params, perturbations)
    with nn.intercept_methods(tape.interceptor):
      loss = loss_fn(params, v, y, k)
    return loss, tape

  def shapes(v, y, k):
    _, tape = one(None, v, y, k)
    return tape.outputs

  first = jax.tree_util.tree_map(lambda t: t[0], (views, labels, keys))
  out_shapes = jax.eval_shape(shapes, *first)
  batch = labels.shape[0]
  # Inside shard_map the perturbations must vary across devices like the batch does:
  # the cotangent of a device-invariant input is summed over the devices, which would
  # add other devices' examples' output gradients to this device's.
  varying = _varying_axes(views)
  zeros = jax.tree_util.tree_map(
      lambda s: _pcast_varying(jnp.zeros((batch,) + s.shape, s.dtype), varying),
      out_shapes)
  calls = []

  def total(perturbations):
    def traced(p, v, y, k):
      loss, tape = one(p, v, y, k)
      calls[:] = tape.calls
      return loss, tape.inputs
    losses, inputs = jax.vmap(traced)(perturbations, views, labels, keys)
    return jnp.sum(losses), (losses, inputs)

  out_grads, (losses, inputs) = jax.grad(total, has_aux=True)(zeros)
  return Recording(calls, inputs, out_grads, losses)


def assemble(params: PyTree, calls: list, per_call: list, batch: Optional[int]):
  """Adds the per-call gradients into a tree shaped like ``params`` ([B, ...] leaves
  when ``batch``); parameters no call used get zeros."""
  grads = {}
  for call, g in zip(calls, per_call):
    node = grads
    for name in call.path:
      node = node.setdefault(name, {})
    for name, value in g.items():
      node[name] = node[name] + value if name in node else value

  def fill(p, path=()):
    out = {}
    for k, v in p.items():
      if isinstance(v, dict):
        out[k] = fill(v, path + (k,))
      else:
        node = subtree(grads, path)
        if node is not None and k in node:
          out[k] = node[k].astype(v.dtype)
        else:
          out[k] = jnp.zeros(((batch,) if batch else ()) + v.shape, v.dtype)
    return out

  return fill(params)
