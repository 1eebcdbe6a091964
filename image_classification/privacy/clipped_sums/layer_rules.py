"""Per-layer rules: each example's parameter gradient of one layer call, computed from
the call's recorded input x [B, ...] and output gradient dy [B, ...] (tape.py), for
the 'fast' and 'ghost' implementations.

Rules are registered by layer CLASS (a subclass inherits its base's rule), beside the
layer kind they serve: nn.Dense and nn.Conv here, weight-standardised convolutions in
image_classification/models/layers.py. A parameter-owning module with no registered
rule, or one its rule does not fit (a masked or input-dilated conv, extra parameters),
takes the GENERIC rule: the module is re-run alone for each example and the VJP w.r.t.
its own parameters is taken. That is exact for any module (only slower), so an
unregistered layer kind is never silently wrong.

Privacy: a rule sees one layer's inputs and output gradients, which are per example;
each example's gradient is computed from its own slices only. ``LayerParts`` holds
exactly the float32 tensors whose norm is taken and which are then summed with the clip
factors (docs/privacy.md, invariant 11: no norm from a difference of large sums).

Mixed precision: the recorded inputs and output gradients may be bfloat16; every
per-example piece is computed with float32 results (``preferred_element_type``) or
cast to float32 before anything reads it, so norms, clip factors and sums are float32.
Every product here asks for full float32 precision (``per_example.HIGHEST``): an
accelerator's default TF32 or bfloat16 passes would round the operands of the ghost
sum's batch matmul, so it could add more than C for an example (per_example.py).
"""
import dataclasses
from typing import Any, Callable, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from image_classification.privacy.clipped_sums import per_example

# A conv's per-example kernel gradient is one im2col matmul when the input has fewer
# channels per group than this, else one matmul per kernel tap (no im2col copy).
IM2COL_MAX_CHANNELS = 32


class LayerParts:
  """One call's per-example gradient, as the tensors the sum is made of.

  ``sq_norms`` is each example's squared norm of exactly those tensors, and
  ``weighted_sum(factors, valid)`` is sum_i factors_i * (example i's tensors), then
  ``combine``d into {name: array}, with the examples where ``valid`` is False
  replaced by zeros first (when given). ``combine`` must be linear and
  norm-preserving (a reshape or transpose), so the norm that clips an example is the
  norm of what it adds to the sum (docs/privacy.md, invariant 11). The optimisation
  barrier makes both read the same materialised values: XLA may not, e.g., rewrite
  the weighted sum of per-example matmuls into one batch matmul, which rounds
  differently. The tensors are cast to float32 BEFORE the barrier: under mixed
  precision the norm and the sum both read the same float32 values (a bfloat16 sum,
  or bfloat16 clip factors, could add more than C for an example).
  """

  def __init__(self, tensors: list, combine: Callable[[list], dict]):
    self._tensors = jax.lax.optimization_barrier(
        [t.astype(jnp.float32) for t in tensors])
    self.sq_norms = sum(per_example.sq_norms(t) for t in self._tensors)
    self._combine = combine

  def weighted_sum(self, factors, valid=None) -> dict:
    return self._combine([per_example.weighted_sum(factors, x, valid)
                          for x in self._tensors])


def parts_from_grads(grads: dict) -> LayerParts:
  """LayerParts of a {name: [B, ...]} per-example gradient, one tensor per name."""
  names = sorted(grads)
  return LayerParts([grads[k] for k in names], lambda sums: dict(zip(names, sums)))


@dataclasses.dataclass(frozen=True)
class LayerRule:
  """How the fast paths get one layer kind's per-example gradient.

  Every function takes the recorded call (tape.Call: ``module``, ``own`` parameter
  names, ...), and, where named so, the layer's parameters ``params`` (its subtree),
  its array ``inputs`` (a list of [B, ...]) and its output gradient ``dy`` [B, ...].

  fits(module, own): whether the rule handles this instance (else GENERIC runs).
  grads(call, params, inputs, dy): {name: [B, ...]} per-example gradients.
  parts(call, params, inputs, dy): LayerParts; default ``parts_from_grads(grads(...))``.
  ghost_sq_norms(call, inputs, dy): [B] squared norms without forming any per-example
    gradient, or None where that is not exact to float32 precision (then 'ghost' forms
    each example's parts one at a time). Optional.
  ghost_sum(call, inputs, dy, factors): sum_i factors_i * grad_i without forming the
    grad_i; required with ghost_sq_norms, and must add, per example, the vector whose
    norm ghost_sq_norms gave (to float32 rounding).
  """
  name: str
  fits: Callable[[nn.Module, tuple], bool]
  grads: Callable[..., dict]
  parts: Optional[Callable[..., LayerParts]] = None
  ghost_sq_norms: Optional[Callable[..., Optional[jax.Array]]] = None
  ghost_sum: Optional[Callable[..., dict]] = None

  def layer_parts(self, call, params, inputs, dy) -> LayerParts:
    if self.parts is not None:
      return self.parts(call, params, inputs, dy)
    return parts_from_grads(self.grads(call, params, inputs, dy))


_RULES: dict[type, LayerRule] = {}


def register(layer_class: type, rule: LayerRule) -> LayerRule:
  """Registers ``rule`` for ``layer_class`` and its subclasses."""
  if _RULES.setdefault(layer_class, rule) is not rule:
    raise ValueError(f'a layer rule for {layer_class.__name__} is registered twice')
  return rule


def registered() -> dict[type, LayerRule]:
  return dict(_RULES)


def rule_for(module: nn.Module, own: tuple) -> LayerRule:
  """The rule of the nearest registered class in ``module``'s MRO if it fits the
  instance, else GENERIC."""
  for cls in type(module).__mro__:
    if cls in _RULES:
      rule = _RULES[cls]
      return rule if rule.fits(module, own) else GENERIC
  return GENERIC


# ---------------------------------------------------------------- generic
def _generic_grads(call, params: dict, inputs: list, dy) -> dict:
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

  return jax.vmap(one)(inputs, dy)


GENERIC = LayerRule('generic', fits=lambda module, own: True, grads=_generic_grads)


# ---------------------------------------------------------------- nn.Dense
def _rows(x):
  """[B, ..., F] -> [B, N, F]: the N vectors one example feeds the layer."""
  return x.reshape(x.shape[0], -1, x.shape[-1])


def _dense_grads(call, params, inputs, dy) -> dict:
  del params
  x, dy = _rows(inputs[0]), _rows(dy)
  out = {'kernel': jnp.einsum('bno,bni->bio', dy, x, preferred_element_type=jnp.float32,
                              precision=per_example.HIGHEST)}
  if 'bias' in call.own:
    out['bias'] = jnp.einsum('bno->bo', dy, preferred_element_type=jnp.float32,
                             precision=per_example.HIGHEST)
  return out


def _dense_ghost_sq_norms(call, inputs, dy) -> Optional[jax.Array]:
  """||x_i dy_i^T||^2 (+ bias) = |x_i|^2 |dy_i|^2 for a Dense layer that sees ONE
  vector per example (a head without augmult), else None.

  A product of two sums of squares: no cancellation, and the vector the ghost sum
  adds for example i, x_i (f_i dy_i)^T, has these entries up to a rounding or two
  each, so its norm is this one to float32 precision. With several vectors per
  example (augmult views, a sequence), the Gram-matrix form
  sum_st <x_s, x_t><dy_s, dy_t> cancels catastrophically in float32 when the vectors
  are near-parallel and the output gradients nearly cancel: such layers take the
  per-example route instead.
  """
  x, dy = _rows(inputs[0]), _rows(dy)
  if x.shape[1] != 1:
    return None
  sq_dy = per_example.sq_norms(dy)
  sq = per_example.sq_norms(x) * sq_dy
  if 'bias' in call.own:
    sq = sq + sq_dy
  return sq


def _dense_ghost_sum(call, inputs, dy, factors) -> dict:
  """sum_i x_i (f_i dy_i)^T: one batch matmul with scaled output gradients."""
  x, dy = _rows(inputs[0]), _rows(dy)
  scaled = dy.astype(jnp.float32) * factors.reshape(-1, 1, 1).astype(jnp.float32)
  out = {'kernel': jnp.einsum('bno,bni->io', scaled, x,
                              preferred_element_type=jnp.float32,
                              precision=per_example.HIGHEST)}
  if 'bias' in call.own:
    out['bias'] = jnp.einsum('bno->o', scaled, preferred_element_type=jnp.float32,
                             precision=per_example.HIGHEST)
  return out


DENSE = register(nn.Dense, LayerRule(
    'dense', fits=lambda module, own: set(own) <= {'kernel', 'bias'},
    grads=_dense_grads, ghost_sq_norms=_dense_ghost_sq_norms,
    ghost_sum=_dense_ghost_sum))


# ---------------------------------------------------------------- convolutions
def _pairs(v, n=2) -> tuple:
  if v is None:
    return (1,) * n
  if isinstance(v, int):
    return (v,) * n
  return tuple(v)


def conv_geometry(kernel_size: tuple, strides, padding, dilation=None,
                  groups: int = 1) -> Optional[dict]:
  """Static geometry of a 2-D NHWC convolution, or None if the rules do not cover it
  (not 2-D, or a padding other than 'SAME', 'VALID' or non-negative pairs)."""
  kernel_size = tuple(kernel_size)
  if len(kernel_size) != 2:
    return None
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
  return dict(kernel_size=kernel_size, strides=_pairs(strides),
              dilation=_pairs(dilation, len(kernel_size)), padding=padding,
              groups=int(groups))


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


def _conv_pieces(x, dy, geometry) -> list:
  """Each example's kernel gradient as consecutive runs of kernel taps: a list of
  [B, G, O/G, taps in run, C/G] arrays (one im2col run for few input channels, else
  one run per tap: a batched matmul of dy with the shifted input, no im2col copy),
  float32 whatever the dtype of x and dy.

  The layout puts the reduced axes (taps, input channels) last, so that per-filter
  sums are row reductions, which XLA:CPU does much faster than column reductions.
  """
  b = x.shape[0]
  x = x.reshape((b, -1) + x.shape[-3:])
  dy = dy.reshape((b, -1) + dy.shape[-3:])
  g = geometry['groups']
  c, o = x.shape[-1], dy.shape[-1]
  taps = _conv_taps(x, geometry, dy.shape[2:4])
  dyr, cg = dy.reshape(b, -1, g, o // g), c // g
  if cg < IM2COL_MAX_CHANNELS:
    cols = jnp.stack(taps, axis=-2).reshape(b, -1, len(taps), g, cg)
    return [jnp.einsum('btgo,btkgc->bgokc', dyr, cols,
                       preferred_element_type=jnp.float32,
                       precision=per_example.HIGHEST)]
  return [jnp.einsum('btgo,btgc->bgoc', dyr, tap.reshape(b, -1, g, cg),
                     preferred_element_type=jnp.float32,
                     precision=per_example.HIGHEST)[:, :, :, None]
          for tap in taps]


def _pieces_to_kernel(pieces: list, kernel_size, batched: bool):
  """[(B,) G, O/G, taps, C/G] pieces -> the kernel layout [(B,) kh, kw, C/G, O]."""
  full = jnp.concatenate(pieces, axis=-2)
  lead = full.shape[:1] if batched else ()
  g, og, _, cg = full.shape[len(lead):]
  axes = (3, 4, 1, 2) if batched else (2, 3, 0, 1)
  full = jnp.transpose(full, ((0,) if batched else ()) + axes)
  return full.reshape(lead + tuple(kernel_size) + (cg, g * og))


def _bias_grad(dy):
  """A conv's per-example bias gradient: dy summed over positions (and views)."""
  return jnp.sum(dy.reshape(dy.shape[0], -1, dy.shape[-1]), axis=1, dtype=jnp.float32)


def conv_rule(name: str, geometry: Callable[[nn.Module], Optional[dict]],
              param_names: tuple = ('kernel', 'bias'),
              effective_kernel: Optional[Callable[[nn.Module, dict], jax.Array]] = None
              ) -> LayerRule:
  """The rule of a 2-D NHWC convolution layer.

  ``geometry(module)`` gives ``conv_geometry(...)`` of an instance (None: the rule
  does not fit it). The layer owns ``param_names``, with an optional 'bias' added to
  its output. ``effective_kernel(module, params)``, when given, is the kernel the layer
  convolves with as a function of its other own parameters (e.g. weight
  standardisation, models/layers.py): each example's gradient of that kernel is
  mapped back to the parameters through the function's VJP, and the norm is taken of
  that result, which is what the sum adds. Not from an identity such as
  |J^T h|^2 = s^2 (|h|^2 - (sum h)^2 / n - <w_hat, h>^2): in float32 that difference
  cancels to ~0 when h lies almost along the removed directions, so an example could
  go unclipped while its true residual is added (docs/privacy.md, invariant 11;
  tests/privacy/clipped_sums/test_sensitivity.py).
  """

  def fits(module, own) -> bool:
    return set(own) <= set(param_names) and geometry(module) is not None

  def kernel_vjp(call, params: dict) -> Callable[[jax.Array], dict]:
    own = {k: params[k] for k in call.own if k != 'bias'}
    _, vjp = jax.vjp(lambda p: effective_kernel(call.module, p), own)
    return lambda grad: vjp(grad)[0]

  def grads(call, params, inputs, dy) -> dict:
    geo = geometry(call.module)
    grad = _pieces_to_kernel(_conv_pieces(inputs[0], dy, geo), geo['kernel_size'],
                             batched=True)
    if effective_kernel is not None:
      out = jax.vmap(kernel_vjp(call, params))(grad)
    else:
      out = {'kernel': grad}
    if 'bias' in call.own:
      out['bias'] = jnp.einsum('bno->bo', dy.reshape(dy.shape[0], -1, dy.shape[-1]),
                               preferred_element_type=jnp.float32,
                               precision=per_example.HIGHEST)
    return out

  def parts(call, params, inputs, dy) -> LayerParts:
    """The per-example gradient in the pieces it is computed in (per kernel tap), or,
    with an effective kernel, the parameters' gradients."""
    geo = geometry(call.module)
    kernel_size = geo['kernel_size']
    pieces = _conv_pieces(inputs[0], dy, geo)
    if effective_kernel is not None:
      kernel = _pieces_to_kernel(pieces, kernel_size, batched=True)
      own_grads = jax.vmap(kernel_vjp(call, params))(kernel)
      names = sorted(own_grads)
      tensors = [own_grads[k] for k in names]
      own = lambda sums: dict(zip(names, sums))
    else:
      tensors = pieces
      own = lambda sums: {'kernel': _pieces_to_kernel(sums, kernel_size, batched=False)}
    n = len(tensors)
    if 'bias' in call.own:
      tensors = tensors + [_bias_grad(dy)]

    def combine(sums):
      out = own(sums[:n])
      if len(sums) > n:
        out['bias'] = sums[n]
      return out

    return LayerParts(tensors, combine)

  return LayerRule(name, fits=fits, grads=grads, parts=parts)


def _flax_conv_geometry(module: nn.Conv) -> Optional[dict]:
  if getattr(module, 'mask', None) is not None:
    return None
  # Flax reads an int kernel_size as a 1-D kernel: not covered, GENERIC runs.
  kernel_size = ((module.kernel_size,) if isinstance(module.kernel_size, int)
                 else tuple(module.kernel_size))
  if any(d != 1 for d in _pairs(module.input_dilation, len(kernel_size))):
    return None
  return conv_geometry(kernel_size, module.strides, module.padding,
                       dilation=module.kernel_dilation,
                       groups=module.feature_group_count)


CONV = register(nn.Conv, conv_rule('conv', _flax_conv_geometry))
