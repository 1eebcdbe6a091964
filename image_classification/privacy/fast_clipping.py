"""Per-example gradients and clipping from activations and output gradients.

The reference path (``clipping.per_example_grads``) vmaps ``jax.grad`` over the
examples. For a convolution, XLA then computes each example's kernel gradient as a
convolution with one feature group per example, which XLA:CPU runs several times
slower than the batch convolution. This module computes the same quantities another
way ("book-keeping", Bu et al. 2023; ghost norms, Goodfellow 2015 / Li et al. 2022),
for any Flax model, without changing the model:

1. One forward pass over the batch (still ``vmap`` over examples, so dropout keys and
   losses are exactly those of the reference), during which a Flax method interceptor
   records, for every module that owns trainable parameters, its inputs, and adds a
   zero "perturbation" to its output.
2. One backward pass w.r.t. the perturbations only: it yields each layer's output
   gradient ``dL_i/dy`` for every example i (example i's loss depends on example i's
   activations only) and computes no parameter gradient at all.
3. Per layer, each example's parameter gradient from (input, output gradient):
   Dense ``x_i^T dy_i``; a convolution's kernel gradient as, for each kernel tap, a
   batched matmul of ``dy`` with the shifted input (one im2col matmul for few input
   channels); any other parameter-owning module (GroupNorm, a skip gain, ...) by
   re-running just that module per example and taking its VJP.
4. ``clipped_sum``: each example's squared norm, layer by layer, then the clip
   factors, then per layer sum_i factor_i * grad_i, where grad_i is the very array
   whose norm was taken (DESIGN.md, privacy invariant 11: no norm is derived from a
   difference of large sums). Weight-standardised convs apply the standardisation's
   VJP (of ``layers.ws_kernel``, the model's own code) to each example's gradient
   before its norm is taken. Without ``keep_per_example`` ("ghost" mode) nothing
   per-example is kept: each layer's gradient is formed one example at a time for
   its norm and dropped, then formed again by the same code once the factors are
   known and accumulated with them; a Dense layer that sees one vector per example never
   forms it (norm |x| |dy|, no cancellation; sum: a batch matmul with scaled
   output gradients).
   No second backward pass through the network.

``per_example_grads`` returns the same [B, ...] tree as the reference, and
``clipped_sum`` the same (sum, norms, valid) as ``clipping.clipped_sum``, to float
tolerance (tests/privacy/test_fast_clipping.py checks every model family, weight
sharing, non-finite examples and 4 devices; tests/privacy/
test_fast_clipping_sensitivity.py checks each example's actual contribution under
inputs built for float cancellation), so the clipping, the sensitivity
argument and everything downstream are unchanged: this is another implementation of
the per-example gradient and its clipping, not a different mechanism.

Privacy: nothing here mixes examples. Each example's per-layer gradient is computed
from that example's own activations and output gradients; the clip factors, the
zeroing of non-finite examples and the bound C per example are those of
``clipping.clip_factors``. Inside shard_map the perturbations are made
device-varying, so that no output gradient is summed across devices before
clipping (tested with 4 devices).

Mixed precision (config.training.compute_dtype='bfloat16'): the recorded inputs and
output gradients are bfloat16; every per-example piece is computed from them with
float32 results (``preferred_element_type``) or cast to float32 before anything else
reads it, so each example's norm, its clip factor and the clipped sum are float32,
and the norm is taken of exactly the float32 values that the sum adds (``_LayerParts``).
The sensitivity bound is therefore the float32 one, whatever the compute dtype
(tests/privacy/test_mixed_precision.py).

Not supported: modules run inside lifted transforms (``nn.remat``, ``nn.scan``,
...); parameter-owning modules whose methods other than ``__call__`` are called from
outside are refused with an error. Use the reference 'vmap' path for such models.
"""
import dataclasses
from typing import Any, Callable, Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from image_classification.models import layers
from image_classification.privacy import clipping

PyTree = Any

IMPLEMENTATIONS = ('vmap', 'fast', 'ghost')

# A conv's per-example kernel gradient is one im2col matmul when the input has fewer
# channels per group than this, else one matmul per kernel tap (no im2col copy).
IM2COL_MAX_CHANNELS = 32


@dataclasses.dataclass
class _Call:
  """What the interceptor saw of one call of a parameter-owning module."""
  kind: str                 # 'dense' | 'conv' | 'ws_conv' | 'generic'
  path: tuple
  module: nn.Module         # an unbound clone, for re-running the module
  own: tuple                # names of the parameters the module owns directly
  treedef: Any              # of (args, kwargs)
  static: list              # non-array leaves of (args, kwargs), None for arrays
  is_array: list


def _subtree(params: PyTree, path: Sequence[str]) -> Optional[dict]:
  node = params
  for name in path:
    if not isinstance(node, dict) or name not in node:
      return None
    node = node[name]
  return node if isinstance(node, dict) else None


def _own_names(params: PyTree, path) -> tuple:
  node = _subtree(params, path)
  if node is None:
    return ()
  return tuple(k for k, v in node.items() if not isinstance(v, dict))


def _pairs(v, n=2) -> tuple:
  if v is None:
    return (1,) * n
  if isinstance(v, int):
    return (v,) * n
  return tuple(v)


def _conv_geometry(module) -> Optional[dict]:
  """Static geometry of a 2-D NHWC conv module, or None if unsupported."""
  if isinstance(module, layers.WSConv):
    kernel_size = _pairs(module.kernel_size)
    dilation = (1, 1)
  elif isinstance(module, nn.Conv):
    if getattr(module, 'mask', None) is not None:
      return None
    if any(d != 1 for d in _pairs(module.input_dilation, len(_pairs(module.kernel_size)))):
      return None
    kernel_size = _pairs(module.kernel_size)
    dilation = _pairs(module.kernel_dilation, len(kernel_size))
  else:
    return None
  if len(kernel_size) != 2:
    return None
  padding = module.padding
  if isinstance(padding, str):
    if padding.upper() not in ('SAME', 'VALID'):
      return None
    padding = padding.upper()
  elif isinstance(padding, int):
    padding = ((padding, padding),) * 2
  else:
    padding = tuple((p, p) if isinstance(p, int) else tuple(p) for p in padding)
    if len(padding) != 2 or any(lo < 0 or hi < 0 for lo, hi in padding):
      return None
  return dict(kernel_size=kernel_size, strides=_pairs(module.strides),
              dilation=dilation, padding=padding,
              groups=int(module.feature_group_count))


def _kind(module, own: tuple) -> str:
  if isinstance(module, nn.Dense) and set(own) <= {'kernel', 'bias'}:
    return 'dense'
  if isinstance(module, layers.WSConv) and set(own) <= {'kernel', 'gain', 'bias'}:
    return 'ws_conv' if _conv_geometry(module) else 'generic'
  if isinstance(module, nn.Conv) and set(own) <= {'kernel', 'bias'}:
    return 'conv' if _conv_geometry(module) else 'generic'
  return 'generic'


class _Tape:
  """Records parameter-owning module calls; adds the perturbations to their outputs."""

  def __init__(self, params: PyTree, perturbations: Optional[list] = None):
    self.params = params
    self.perturbations = perturbations
    self.calls: list[_Call] = []
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
    self.calls.append(_Call(
        kind=_kind(module, own), path=tuple(module.path),
        module=module.clone(parent=None), own=own, treedef=treedef,
        static=[None if a else x for x, a in zip(leaves, is_array)],
        is_array=is_array))
    self.inputs.append([x for x, a in zip(leaves, is_array) if a])
    self.outputs.append(out)
    if self.perturbations is not None:
      out = jax.tree_util.tree_map(jnp.add, out, self.perturbations[index])
    return out


# ---------------------------------------------------------------- per-layer gradients
# Each takes the batched input x [B, ...] and output gradient dy [B, ...] of one call
# (B = examples; the dims after B are what the module saw for one example, e.g. the K
# augmult views) and returns {param name: gradient}, per example ([B, ...]) or summed
# over the batch with per-example ``weights`` (the clipped sum), when given.


def _contract(spec_in: str, spec_out_per_example: str, weights, *operands):
  """einsum 'b...' -> per example 'b...' or, with weights [B], the weighted sum.
  Float32 results whatever the operands' dtype (bfloat16 under mixed precision); the
  weights multiply a float32 copy of the first operand."""
  if weights is None:
    return jnp.einsum(f'{spec_in}->{spec_out_per_example}', *operands,
                      preferred_element_type=jnp.float32)
  first, rest = operands[0].astype(jnp.float32), operands[1:]
  first = first * weights.reshape((-1,) + (1,) * (first.ndim - 1)).astype(jnp.float32)
  return jnp.einsum(f'{spec_in}->{spec_out_per_example[1:]}', first, *rest,
                    preferred_element_type=jnp.float32)


def _dense_grads(call: _Call, x, dy, weights=None) -> dict:
  b = x.shape[0]
  x = x.reshape(b, -1, x.shape[-1])
  dy = dy.reshape(b, -1, dy.shape[-1])
  out = {'kernel': _contract('bno,bni', 'bio', weights, dy, x)}
  if 'bias' in call.own:
    out['bias'] = _contract('bno', 'bo', weights, dy)
  return out


def _conv_taps(x, geometry, out_spatial):
  """The kernel taps' views of the padded input: a list of [B, N, Ho, Wo, C]."""
  (kh, kw), (sh, sw), (dh, dw) = (geometry['kernel_size'], geometry['strides'],
                                  geometry['dilation'])
  padding = geometry['padding']
  if isinstance(padding, str):
    padding = jax.lax.padtype_to_pads(
        x.shape[2:4], ((kh - 1) * dh + 1, (kw - 1) * dw + 1), (sh, sw), padding)
  xp = jnp.pad(x, ((0, 0), (0, 0)) + tuple(tuple(p) for p in padding) + ((0, 0),))
  ho, wo = out_spatial
  taps = []
  for i in range(kh):
    for j in range(kw):
      start = (0, 0, i * dh, j * dw, 0)
      limit = (xp.shape[0], xp.shape[1], i * dh + sh * (ho - 1) + 1,
               j * dw + sw * (wo - 1) + 1, xp.shape[4])
      taps.append(jax.lax.slice(xp, start, limit, (1, 1, sh, sw, 1)))
  return taps


def _conv_operands(x, dy, geometry):
  """(taps [list of [B, N, Ho, Wo, C]], dy as [B, T, G, O/G], shape facts)."""
  b = x.shape[0]
  x = x.reshape((b, -1) + x.shape[-3:])
  dy = dy.reshape((b, -1) + dy.shape[-3:])
  g = geometry['groups']
  c, o = x.shape[-1], dy.shape[-1]
  taps = _conv_taps(x, geometry, dy.shape[2:4])
  return taps, dy.reshape(b, -1, g, o // g), (b, c // g, g, o // g)


def _conv_pieces(x, dy, geometry) -> list:
  """Each example's kernel gradient as consecutive runs of kernel taps: a list of
  [B, G, O/G, taps in run, C/G] arrays (one im2col run for few input channels, else
  one run per tap: a batched matmul of dy with the shifted input, no im2col copy),
  float32 whatever the dtype of x and dy.

  The layout puts the reduced axes (taps, input channels) last, so that per-filter
  sums are row reductions, which XLA:CPU does much faster than column reductions.
  """
  taps, dyr, (b, cg, g, _) = _conv_operands(x, dy, geometry)
  if cg < IM2COL_MAX_CHANNELS:
    cols = jnp.stack(taps, axis=-2).reshape(b, -1, len(taps), g, cg)
    return [jnp.einsum('btgo,btkgc->bgokc', dyr, cols,
                       preferred_element_type=jnp.float32)]
  return [jnp.einsum('btgo,btgc->bgoc', dyr, tap.reshape(b, -1, g, cg),
                     preferred_element_type=jnp.float32)[:, :, :, None]
          for tap in taps]


def _pieces_to_kernel(pieces: list, kernel_size, batched: bool):
  """[(B,) G, O/G, taps, C/G] pieces -> the kernel layout [(B,) kh, kw, C/G, O]."""
  full = jnp.concatenate(pieces, axis=-2)
  lead = full.shape[:1] if batched else ()
  g, og, _, cg = full.shape[len(lead):]
  axes = (3, 4, 1, 2) if batched else (2, 3, 0, 1)
  full = jnp.transpose(full, ((0,) if batched else ()) + axes)
  return full.reshape(lead + tuple(kernel_size) + (cg, g * og))


def _conv_kernel_grad(x, dy, geometry, weights=None):
  """Kernel gradient [B, kh, kw, C/G, O] (or the weighted sum [kh, kw, C/G, O])."""
  kh, kw = geometry['kernel_size']
  if weights is None:
    return _pieces_to_kernel(_conv_pieces(x, dy, geometry), (kh, kw), batched=True)
  taps, dyr, (b, cg, g, og) = _conv_operands(x, dy, geometry)
  dyr = dyr.astype(jnp.float32) * weights.reshape(-1, 1, 1, 1).astype(jnp.float32)
  if cg < IM2COL_MAX_CHANNELS:
    cols = jnp.stack(taps, axis=-2).reshape(b, -1, len(taps), g, cg)
    grad = jnp.einsum('btkgc,btgo->kcgo', cols, dyr, preferred_element_type=jnp.float32)
  else:
    grad = jnp.stack([jnp.einsum('btgc,btgo->cgo', tap.reshape(b, -1, g, cg), dyr,
                                 preferred_element_type=jnp.float32)
                      for tap in taps])
  return grad.reshape(kh, kw, cg, g * og)


def _ws_kernel_vjp(call: _Call, params: dict) -> Callable[[jax.Array], dict]:
  """The VJP of the kernel a WSConv convolves with (``layers.ws_kernel``, the model's
  own code) w.r.t. its parameters: effective-kernel gradient -> {'kernel'[, 'gain']}."""
  own = {k: params[k] for k in call.own if k in ('kernel', 'gain')}
  _, vjp = jax.vjp(
      lambda p: layers.ws_kernel(p['kernel'], p.get('gain'), call.module.eps), own)
  return lambda grad: vjp(grad)[0]


def _conv_grads(call: _Call, params: dict, x, dy, weights=None) -> dict:
  geometry = _conv_geometry(call.module)
  grad = _conv_kernel_grad(x, dy, geometry, weights)
  if call.kind == 'ws_conv':
    vjp = _ws_kernel_vjp(call, params)
    out = jax.vmap(vjp)(grad) if weights is None else vjp(grad)
  else:
    out = {'kernel': grad}
  if 'bias' in call.own:
    dyr = dy.reshape(dy.shape[0], -1, dy.shape[-1])
    out['bias'] = _contract('bno', 'bo', weights, dyr)
  return out


def _generic_grads(call: _Call, params: dict, dynamic: list, dy, weights=None) -> dict:
  """VJP of the module itself w.r.t. its own parameters, per example."""
  own = {k: params[k] for k in call.own}
  children = {k: v for k, v in params.items() if isinstance(v, dict)}

  def apply(p, dyn):
    it = iter(dyn)
    leaves = [next(it) if a else s for a, s in zip(call.is_array, call.static)]
    args, kwargs = jax.tree_util.tree_unflatten(call.treedef, leaves)
    return call.module.apply({'params': {**children, **p}}, *args, **kwargs)

  def one(dyn, cot):
    _, vjp = jax.vjp(lambda p: apply(p, dyn), own)
    return vjp(cot)[0]

  grads = jax.vmap(one)(dynamic, dy)
  if weights is None:
    return grads
  return jax.tree_util.tree_map(
      lambda g: jnp.tensordot(weights.astype(jnp.float32), g.astype(jnp.float32), 1),
      grads)


def _layer_grads(call: _Call, params: PyTree, dynamic: list, dy, weights=None) -> dict:
  layer_params = _subtree(params, call.path)
  if call.kind == 'dense':
    return _dense_grads(call, dynamic[0], dy, weights)
  if call.kind in ('conv', 'ws_conv'):
    return _conv_grads(call, layer_params, dynamic[0], dy, weights)
  return _generic_grads(call, layer_params, dynamic, dy, weights)


# ---------------------------------------------------------------- the passes


def _varying_axes(x) -> tuple:
  """The mesh axes along which ``x`` varies inside shard_map (() outside it)."""
  manual = getattr(jax.typeof(x), 'manual_axis_type', None)
  return tuple(sorted(getattr(manual, 'varying', ()) or ()))


def _pcast_varying(x, axes: tuple):
  return jax.lax.pcast(x, axes, to='varying') if axes else x


def _forward_backward(loss_fn: Callable, params: PyTree, views, labels, keys):
  """Runs the recorded forward and the backward w.r.t. the layers' outputs.

  Returns (calls, inputs [per call, list of [B, ...]], output grads [per call], losses).
  """
  def one(perturbations, v, y, k):
    tape = _Tape(params, perturbations)
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
  return calls, inputs, out_grads, losses


def _assemble(params: PyTree, calls: list, per_call: list, batch: Optional[int]):
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
        node = _subtree(grads, path)
        if node is not None and k in node:
          out[k] = node[k].astype(v.dtype)
        else:
          out[k] = jnp.zeros(((batch,) if batch else ()) + v.shape, v.dtype)
    return out

  return fill(params)


def per_example_grads(loss_fn: Callable[..., jax.Array], params: PyTree, views,
                      labels, keys):
  """Drop-in for ``clipping.per_example_grads``: same arguments, same result.

  ``loss_fn(params, views_k, label, key)`` is the mean loss over the K views of ONE
  example and must apply a Flax model to ``params`` (a dict of module names).
  Returns (grads with [B, ...] leaves, losses [B]).
  """
  calls, inputs, out_grads, losses = _forward_backward(loss_fn, params, views, labels,
                                                       keys)
  per_call = [_layer_grads(c, params, x, dy) for c, x, dy in zip(calls, inputs, out_grads)]
  return _assemble(params, calls, per_call, labels.shape[0]), losses


def batch_grad(loss_fn: Callable[..., jax.Array], params: PyTree, views, labels, keys,
               weights=None):
  """The gradient of sum_i weights_i * loss_i with the same layer formulation (no
  per-example gradient is formed). ``weights`` defaults to ones. Returns (grads, losses).
  """
  calls, inputs, out_grads, losses = _forward_backward(loss_fn, params, views, labels,
                                                       keys)
  if weights is None:
    weights = jnp.ones(labels.shape[:1], jnp.float32)
  per_call = [_layer_grads(c, params, x, dy, weights)
              for c, x, dy in zip(calls, inputs, out_grads)]
  return _assemble(params, calls, per_call, None), losses


def _dense_outer_sq_norms(call: _Call, x, dy) -> Optional[jax.Array]:
  """||x_i dy_i^T||^2 (+ bias) = |x_i|^2 |dy_i|^2 for a Dense layer that sees ONE
  vector per example (a head without augmult), else None.

  A product of two sums of squares: no cancellation, and the vector the ghost sum
  adds for example i, x_i (f_i dy_i)^T, has these entries up to a rounding or two
  each, so its norm is this one to float32 precision. With several vectors per example (augmult views, a sequence), the Gram-matrix
  form sum_st <x_s, x_t><dy_s, dy_t> cancels catastrophically in float32 when the
  vectors are near-parallel and the output gradients nearly cancel: such layers take
  the per-example route instead.
  """
  b = x.shape[0]
  x = x.reshape(b, -1, x.shape[-1])
  dy = dy.reshape(b, -1, dy.shape[-1])
  if x.shape[1] != 1:
    return None
  sq_dy = _sq_sum(dy)
  sq = _sq_sum(x) * sq_dy
  if 'bias' in call.own:
    sq = sq + sq_dy
  return sq


class _LayerParts:
  """One call's per-example gradient, as the tensors the sum is made of.

  ``sq_norms`` is each example's squared norm of exactly those tensors, and
  ``weighted_sum(factors, valid)`` is sum_i factors_i * (example i's tensors), then
  ``combine``d into {name: array}, with the examples where ``valid`` is False
  replaced by zeros first (when given). ``combine`` must be linear and
  norm-preserving (a reshape or transpose), so the norm that clips an example is the
  norm of what it adds to the sum (DESIGN.md, privacy invariant 11). The optimisation
  barrier makes both read the same materialised values: XLA may not, e.g., rewrite
  the weighted sum of per-example matmuls into one batch matmul, which rounds
  differently. The tensors are cast to float32 BEFORE the barrier: under mixed
  precision the norm and the sum both read the same float32 values (a bfloat16 sum,
  or bfloat16 clip factors, could add more than C for an example).
  """

  def __init__(self, tensors: list, combine: Callable[[list], dict]):
    self._tensors = jax.lax.optimization_barrier(
        [t.astype(jnp.float32) for t in tensors])
    self.sq_norms = sum(_sq_sum(t) for t in self._tensors)
    self._combine = combine

  def weighted_sum(self, factors, valid=None) -> dict:
    def one(x):
      if valid is not None:
        x = jnp.where(valid.reshape((-1,) + (1,) * (x.ndim - 1)), x,
                      jnp.zeros((), x.dtype))
      return jnp.tensordot(factors.astype(x.dtype), x, axes=1)
    return self._combine([one(x) for x in self._tensors])


def _sq_sum(x) -> jax.Array:
  """Per-example sum of squares: [B, ...] -> [B]."""
  x = x.reshape(x.shape[0], -1).astype(jnp.float32)
  return jnp.sum(x * x, axis=1)


def _conv_parts(call: _Call, params: dict, x, dy) -> _LayerParts:
  """A conv's per-example gradient in the pieces it is computed in (per kernel tap).

  Weight-standardised convs: the standardisation's VJP (of ``layers.ws_kernel``, the
  model's code) is applied to each example's effective-kernel gradient, and the norm
  is taken of that result, which is what the sum adds. Not from the identity
  |J^T h|^2 = s^2 (|h|^2 - (sum h)^2 / n - <w_hat, h>^2): in float32 that difference
  cancels to ~0 when h lies almost along the removed directions (the constant filter
  and w_hat), so an example could go unclipped while its true residual is added
  (DESIGN.md, privacy invariant 11; tests/privacy/test_fast_clipping_sensitivity.py).
  """
  geometry = _conv_geometry(call.module)
  kh, kw = geometry['kernel_size']
  pieces = _conv_pieces(x, dy, geometry)
  if call.kind == 'ws_conv':
    kernel = _pieces_to_kernel(pieces, (kh, kw), batched=True)
    grads = jax.vmap(_ws_kernel_vjp(call, params))(kernel)
    names = sorted(grads)
    tensors = [grads[k] for k in names]
    own = lambda sums: dict(zip(names, sums))
  else:
    tensors = pieces
    own = lambda sums: {'kernel': _pieces_to_kernel(sums, (kh, kw), batched=False)}
  n = len(tensors)
  if 'bias' in call.own:
    tensors = tensors + [jnp.sum(dy.reshape(dy.shape[0], -1, dy.shape[-1]), axis=1,
                                 dtype=jnp.float32)]

  def combine(sums):
    out = own(sums[:n])
    if len(sums) > n:
      out['bias'] = sums[n]
    return out

  return _LayerParts(tensors, combine)


def _layer_parts(call: _Call, params: PyTree, dynamic: list, dy) -> _LayerParts:
  layer_params = _subtree(params, call.path)
  if call.kind in ('conv', 'ws_conv'):
    return _conv_parts(call, layer_params, dynamic[0], dy)
  grads = _layer_grads(call, params, dynamic, dy)
  names = sorted(grads)
  return _LayerParts([grads[k] for k in names], lambda sums: dict(zip(names, sums)))


def _all_finite(norms: jax.Array) -> jax.Array:
  return jnp.all(jnp.isfinite(norms))


def sum_clipped(per_example_tree: PyTree, mask: jax.Array, clipping_norm: float):
  """``clipping.clipped_sum`` with the same contract and result, faster on CPU.

  The reference masks every per-example leaf with ``jnp.where`` before the weighted
  sum, an extra pass over all per-example gradients that XLA:CPU does not fuse into
  the dot. Here the masking pass runs only when some norm is not finite (then a NaN
  times a zero factor would still be NaN); otherwise a zero clip factor already
  removes padding slots exactly.
  Returns (sum tree, norms [B], valid [B]).
  """
  norms = clipping.global_norms(per_example_tree)
  factors, valid = clipping.clip_factors(norms, mask, clipping_norm)

  def weighted_sum(tree):
    return jax.tree_util.tree_map(
        lambda x: jnp.tensordot(factors.astype(x.dtype), x, axes=1), tree)

  def masked_sum(tree):
    return weighted_sum(jax.tree_util.tree_map(
        lambda x: jnp.where(valid.reshape((-1,) + (1,) * (x.ndim - 1)), x, 0.0), tree))

  summed = jax.lax.cond(_all_finite(norms), weighted_sum, masked_sum, per_example_tree)
  return summed, norms, valid


def clipped_sum(loss_fn: Callable[..., jax.Array], params: PyTree, views, labels,
                keys, mask, clipping_norm: float, keep_per_example: bool = False):
  """Sum over the batch of each example's gradient clipped to norm C.

  Same contract as ``clipping.clipped_sum(clipping.per_example_grads(...), mask, C)``:
  returns (sum tree, norms [B], valid [B], losses [B]); an example with mask False or
  a non-finite gradient norm contributes exactly zero, every other one at most C.

  With ``keep_per_example`` ('fast' in the DP step) every layer's per-example
  gradient is formed once, in the pieces it is computed in (per kernel tap), its
  squared norm taken, and after the clip factors are known the same pieces are
  summed with them: fastest on CPU; memory about B x #params. For weight-
  standardised convs the pieces are each example's gradient of the raw kernel (and
  gain): the standardisation's VJP applied per example, then normed and summed.

  Without it ('ghost'), each example's squared norm is accumulated layer by layer
  (a one-vector Dense layer's from |x|^2 |dy|^2, any other layer's from its gradient
  for that one example, formed in a loop over the examples and dropped right after),
  and the sum recomputes each example's layer gradient with the same code and
  accumulates it with its factor (the one-vector Dense layers: a batch matmul with
  scaled output gradients): no second backward pass through the network and no
  per-example buffer beyond one example's gradient of one layer, at the price of
  computing the per-example weight gradients twice, in loops over the examples.

  Sensitivity, for every input: the norm that sets an example's factor is the norm
  of the array that is scaled and added (for one-vector Dense layers in ghost mode:
  |x| |dy|, equal to float32 precision; tests/privacy/
  test_fast_clipping_sensitivity.py measures each example's contribution with the
  others masked, under near-constant, 1e4 and 1e-4 inputs and 1e6 heads).
  Ghost mode relies on XLA computing the same operation on the same values to the
  same bits: both passes run the same ``_layer_parts`` code on one example, whose
  tensors sit behind an optimisation barrier, so neither is rewritten into a
  differently rounded form.
  """
  calls, inputs, out_grads, losses = _forward_backward(loss_fn, params, views, labels,
                                                       keys)
  paths = [c.path for c in calls]
  shared = len(set(paths)) != len(paths)
  if shared:
    # A parameter used by several calls needs its per-call gradients added before
    # the norm is taken: the exact per-example tree (rare: weight sharing).
    grads = _assemble(params, calls, [_layer_grads(c, params, x, dy) for c, x, dy in
                                      zip(calls, inputs, out_grads)], labels.shape[0])
    return (*sum_clipped(grads, mask, clipping_norm), losses)
  if keep_per_example:
    parts = [_layer_parts(c, params, x, dy) for c, x, dy in zip(calls, inputs, out_grads)]
    norms = jnp.sqrt(sum(p.sq_norms for p in parts))
    factors, valid = clipping.clip_factors(norms, mask, clipping_norm)
    per_call = jax.lax.cond(
        _all_finite(norms), lambda: [p.weighted_sum(factors) for p in parts],
        lambda: [p.weighted_sum(factors, valid) for p in parts])
    return _assemble(params, calls, per_call, None), norms, valid, losses
  # Ghost. Pass 1: squared norms, layer by layer, one example at a time (a
  # one-vector Dense layer needs no per-example tensor at all).
  outer = [_dense_outer_sq_norms(c, x[0], dy) if c.kind == 'dense' else None
           for c, x, dy in zip(calls, inputs, out_grads)]
  sq = jnp.zeros(labels.shape[:1], jnp.float32)
  for call, x, dy, o in zip(calls, inputs, out_grads, outer):
    sq = sq + (_one_by_one_sq_norms(call, params, x, dy) if o is None else o)
  norms = jnp.sqrt(sq)
  factors, valid = clipping.clip_factors(norms, mask, clipping_norm)

  def clean(tensors):  # zero the invalid examples' inputs and output gradients
    return jax.tree_util.tree_map(
        lambda t: jnp.where(valid.reshape((-1,) + (1,) * (t.ndim - 1)), t,
                            jnp.zeros((), t.dtype)),
        tensors)

  inputs, out_grads = jax.lax.cond(_all_finite(norms), lambda t: t, clean,
                                   (inputs, out_grads))
  # Pass 2: each example's tensors again, by the same code on the same values (so
  # the very vectors whose norms gave the factors), accumulated with the factors.
  # A one-vector Dense layer's sum is the batch matmul with scaled output gradients:
  # per example, x_i (f_i dy_i)^T.
  per_call = []
  for call, x, dy, o in zip(calls, inputs, out_grads, outer):
    if o is not None:
      per_call.append(_layer_grads(call, params, x, dy, factors))
    else:
      per_call.append(_one_by_one_weighted_sum(call, params, x, dy, factors))
  return _assemble(params, calls, per_call, None), norms, valid, losses


def _example(tree):
  """One example's slice of a [B, ...] tree, as a batch of one."""
  return jax.tree_util.tree_map(lambda t: t[None], tree)


def _one_by_one_sq_norms(call: _Call, params: PyTree, dynamic: list, dy) -> jax.Array:
  """Ghost pass 1 for one layer: each example's squared norm, computed from that
  example's ``_layer_parts`` alone (memory: one example's gradient of this layer)."""
  def one(operands):
    return _layer_parts(call, params, *_example(operands)).sq_norms[0]
  return jax.lax.map(one, (dynamic, dy))


def _one_by_one_weighted_sum(call: _Call, params: PyTree, dynamic: list, dy,
                             factors) -> dict:
  """Ghost pass 2 for one layer: sum_i factors_i * (example i's ``_layer_parts``),
  accumulated one example at a time, with the same code as pass 1."""
  def term(operands, factor):
    return _layer_parts(call, params, *_example(operands)).weighted_sum(factor[None])

  def body(total, xs):
    operands, factor = xs
    return jax.tree_util.tree_map(jnp.add, total, term(operands, factor)), None

  first = term(jax.tree_util.tree_map(lambda t: t[0], (dynamic, dy)), factors[0])
  rest = jax.tree_util.tree_map(lambda t: t[1:], ((dynamic, dy), factors))
  return jax.lax.scan(body, first, rest)[0]
