"""Every contraction of the clipping arithmetic asks for full float32 precision.

On GPUs and TPUs a float32 dot may run in TF32 or bfloat16 passes by default, which
rounds its operands to a 10- or 8-bit mantissa: the sum would add a rounded copy of an
example's vector, whose norm can exceed the one that set its clip factor (more than C).
So every dot_general whose source line is in privacy/clipped_sums/ (the per-example
pieces of 'fast' and 'ghost', the ghost sum's batch matmul, per_example.weighted_sum)
must carry precision HIGHEST. This CPU test reads it from the lowered StableHLO, with
each op's source location, for each clipping path and for both compute dtypes; the
model's own forward and backward dots (from flax, outside the clipping code) are not
asked. docs/privacy.md, invariant 11.
"""
import os
import re

import jax
import jax.numpy as jnp
import optax
import pytest

from image_classification.models import registry
from image_classification.privacy import clipped_sums

CLIPPING_CODE = os.path.join('image_classification', 'privacy', 'clipped_sums') + os.sep
_DEF = re.compile(r'^(#loc\d*) = loc\((.*)\)$')


def _innermost_file(loc: str, defs: dict) -> str | None:
  """The file of the innermost frame of location ``#locN`` (a callsite's callee first)."""
  body = defs.get(loc, '')
  match = re.match(r'^"([^"]*)":\d+', body)
  if match:
    return match.group(1)
  match = re.match(r'^callsite\((#loc\d*) at (#loc\d*)\)$', body)
  if match:
    return _innermost_file(match.group(1), defs)
  match = re.match(r'^"[^"]*"\((#loc\d*)\)$', body)  # a named location
  if match:
    return _innermost_file(match.group(1), defs)
  return None


def dots_by_file(text: str) -> list[tuple[str | None, str]]:
  """(innermost source file, precision attribute) of every dot_general in ``text``."""
  defs = {}
  for line in text.splitlines():
    match = _DEF.match(line.strip())
    if match:
      defs[match.group(1)] = match.group(2)
  out = []
  for line in text.splitlines():
    if 'stablehlo.dot_general' not in line:
      continue
    loc = re.search(r'loc\((#loc\d*)\)\s*$', line)
    precision = re.search(r'precision = \[([A-Z, ]+)\]', line)
    out.append((_innermost_file(loc.group(1), defs) if loc else None,
                precision.group(1) if precision else 'none'))
  return out


def _lowered(impl: str, compute_dtype: str) -> str:
  # Convolutions with few input channels (the im2col pieces) and with many (one
  # matmul per kernel tap), a hidden Dense layer and the head (the ghost sum).
  model = registry.build('cnn', 3, channels=(4, 40, 4), hidden=6, compute_dtype=compute_dtype)
  shape = (6, 6, 1)
  params = model.init({'params': jax.random.PRNGKey(0), 'dropout': jax.random.PRNGKey(0)},
                      jnp.zeros((1,) + shape), is_training=False)['params']

  def loss_fn(p, v, y, k):
    logits = model.apply({'params': p}, v, is_training=True, rngs={'dropout': k})
    return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(
        logits, jnp.broadcast_to(y, v.shape[:1])))

  batch = 3
  views = jnp.zeros((batch, 1) + shape)
  labels = jnp.zeros((batch,), jnp.int32)
  keys = jax.random.split(jax.random.PRNGKey(1), batch)
  mask = jnp.ones((batch,), bool)
  fn = clipped_sums.get(impl)
  return jax.jit(lambda p, v, y, k, m: fn(loss_fn, p, v, y, k, m, 1.0)).lower(
      params, views, labels, keys, mask).as_text(debug_info=True)


@pytest.mark.parametrize('compute_dtype', ['float32', 'bfloat16'])
@pytest.mark.parametrize('impl', ['vmap', 'fast', 'ghost'])
def test_every_clipping_contraction_is_highest_precision(impl, compute_dtype):
  dots = dots_by_file(_lowered(impl, compute_dtype))
  assert all(f is not None for f, _ in dots), dots  # every dot has a source file
  clipping = [(f, p) for f, p in dots if CLIPPING_CODE in f]
  # vmap: the weighted sum of each parameter; fast and ghost: the per-example pieces
  # and their sums as well.
  assert len(clipping) >= (4 if impl == 'vmap' else 8), dots
  assert all(p == 'HIGHEST, HIGHEST' for _, p in clipping), clipping
  # The model's own products are not asked for (the test can tell them apart).
  assert any(CLIPPING_CODE not in f for f, _ in dots), dots


def test_the_check_sees_a_default_precision_dot():
  """A dot in the clipping code without a precision is reported as DEFAULT."""
  def f(x):
    return jnp.tensordot(x, x, axes=1)
  text = jax.jit(f).lower(jnp.ones((3,))).as_text(debug_info=True)
  (file, precision), = dots_by_file(text)
  assert file == os.path.abspath(__file__)
  assert precision == 'DEFAULT, DEFAULT'
