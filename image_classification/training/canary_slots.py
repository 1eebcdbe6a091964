"""The step's extension point for white-box gradient canaries (audit mode 'gradient').

A gradient canary is a training example whose per-example gradient is a fixed vector
(a Dirac canary: ``raw_norm`` times the unit vector of one parameter coordinate), not
the gradient of an image. The audit (image_classification/audit/gradient_canaries.py)
appends the included canaries to the training split as ordinary examples, so the
run's own batch selection samples them and the accountant counts them in N. Such an
example is read with a NEGATIVE label, ``-1 - j`` for canary j; with a
``GradientCanaries`` given to the step:

* ``split_slots``: a slot with a negative label is no real example: it is masked out
  of the model's clipped sum (its placeholder image never contributes);
* ``add_clipped_canaries``: each such slot contributes its canary vector, clipped by
  the real clipping arithmetic (``per_example.global_norms`` and ``clip_factors``, the
  functions every clipped-sum implementation uses), to the micro-batch's clipped sum.
  From there it takes the real path: the scan over micro-batches, the psum across
  devices, the privatizer, the normaliser and the optimiser;
* ``observe``: after the noise and the normaliser, the step reports the privatized
  gradient at the canaries' coordinates (``OBSERVATION`` in its stats), which the
  loop hands to the audit hook. The step releases nothing else new: these values are
  coordinates of the update the optimiser applies, which the DP guarantee covers.

Without a ``GradientCanaries`` (audit off, or mode 'input') the step never calls this
module and compiles the same program as before it existed.
"""
import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from image_classification.privacy.clipped_sums import per_example

PyTree = Any

# The key of the step's stats that holds the observation (popped by the loop).
OBSERVATION = 'canary_observation'


@dataclasses.dataclass(frozen=True, eq=False)
class GradientCanaries:
  """Which coordinates the step's gradient canaries occupy (all public).

  Attributes:
    leaf: path of the trainable parameter that carries them, e.g. ('head', 'kernel').
    coordinates: [m] distinct flat offsets into that parameter; canary j is
      ``raw_norm * e_{coordinates[j]}``.
    raw_norm: the L2 norm of a canary vector BEFORE clipping. Above C, so that the
      clipping bound the step enforces is what reaches the sum (clipping at 2C would
      let 2C through when raw_norm >= 2C).
  """
  leaf: tuple
  coordinates: np.ndarray
  raw_norm: float

  def __post_init__(self):
    coords = np.asarray(self.coordinates)
    if coords.ndim != 1 or coords.size == 0 or len(np.unique(coords)) != coords.size:
      raise ValueError('coordinates must be a non-empty 1-D array of distinct offsets')
    if not self.raw_norm > 0:
      raise ValueError(f'raw_norm must be > 0, got {self.raw_norm}')

  @property
  def num_canaries(self) -> int:
    return int(np.asarray(self.coordinates).shape[0])


def canary_label(canary_id: np.ndarray) -> np.ndarray:
  """The label a training split gives the slot of canary ``canary_id`` (>= 0)."""
  return (-1 - np.asarray(canary_id)).astype(np.int32)


def split_slots(labels, mask):
  """(real-example mask, canary-slot mask, labels safe for the model's loss)."""
  is_canary = jnp.logical_and(mask, labels < 0)
  real = jnp.logical_and(mask, labels >= 0)
  return real, is_canary, jnp.where(labels < 0, 0, labels)


def leaf_path(key_path) -> tuple:
  """('head', 'kernel') for a jax key path of dict keys (or attribute names)."""
  return tuple(str(getattr(k, 'key', getattr(k, 'name', k))) for k in key_path)


def leaf_values(tree: PyTree, path: tuple):
  """The leaf of ``tree`` at ``path`` (e.g. ('head', 'kernel'))."""
  return _leaf(tree, path)


def _leaf(tree: PyTree, path: tuple):
  found = [x for p, x in jax.tree_util.tree_flatten_with_path(tree)[0]
           if leaf_path(p) == tuple(path)]
  if len(found) != 1:
    raise ValueError(f'no parameter {"/".join(path)} in the trainable parameters')
  return found[0]


def _replace_leaf(tree: PyTree, path: tuple, value):
  return jax.tree_util.tree_map_with_path(
      lambda p, x: value if leaf_path(p) == tuple(path) else x, tree)


def add_clipped_canaries(summed: PyTree, labels, is_canary, spec: GradientCanaries,
                         clipping_norm: float) -> PyTree:
  """``summed`` plus every canary slot's canary vector clipped to ``clipping_norm``.

  A Dirac canary has one non-zero coordinate, so its per-example vector is written as
  a [B, 1] array; its norm and clip factor come from the same functions that clip
  real examples. Slots that hold no canary get factor 0 and add exactly nothing.
  """
  values = jnp.where(is_canary, jnp.float32(spec.raw_norm), jnp.float32(0.0))
  norms = per_example.global_norms({'canary': values[:, None]})
  factors, _ = per_example.clip_factors(norms, is_canary, clipping_norm)
  contributions = factors * values
  coords = jnp.asarray(np.asarray(spec.coordinates), jnp.int32)
  index = jnp.where(is_canary, coords[jnp.clip(-1 - labels, 0, coords.shape[0] - 1)], 0)
  leaf = _leaf(summed, spec.leaf)
  flat = leaf.reshape(-1).at[index].add(contributions.astype(leaf.dtype))
  return _replace_leaf(summed, spec.leaf, flat.reshape(leaf.shape))


def observe(grads: PyTree, spec: GradientCanaries) -> jax.Array:
  """[m] the (noisy, normalised) gradient at the canaries' coordinates."""
  coords = jnp.asarray(np.asarray(spec.coordinates), jnp.int32)
  return _leaf(grads, spec.leaf).reshape(-1)[coords].astype(jnp.float32)
