"""The Gaussian mechanism of DP-SGD: noise added once per logical batch.

``add_noise`` adds N(0, (sigma * C)^2) independently to every coordinate of the clipped
sum. It must be called exactly once per logical batch, after summing over micro-batches
and devices, with a key that is the same on every device. The trainer derives it from
the run's secret base noise key (privacy/mechanism_secret.py: OS entropy, never
config.seed) and the step number, so it never repeats across steps or runs and is
independent of the keys that order the data.

How every draw depends on 128 secret bits (docs/privacy.md, invariant 17). The base
key from a secret is four uint32 words, a key of the Threefry-4x32-20 generator
(privacy/noise_generator.py: Random123's block function, whose key is 128 bits). Step
t's key is ``fold_in(fold_in(base, stream), t)``, and the step's N(0, 1) draws for all
the leaves are one ``jax.random.normal`` of that key, cut into the leaves in order
(``standard_normals``): every one of these is the block function keyed by the previous
128-bit key, so each Gaussian coordinate is a function of all 128 bits of the base key
and nothing shorter is ever derived. Whoever wants one step's noise from two released
iterates must search 2^128 keys (or the step's own 128-bit key), not 2^64. One draw
for all leaves also keeps one instance of the block function per step, whatever the
number of leaves (compile time).

The insecure testing switch (``privacy.insecure_seeded_noise``) passes a two-word key
(threefry2x32, JAX's default generator, 64 bits), drawn with exactly the key and the
operations of earlier versions (one split key per leaf), so seeded runs reproduce them
bit for bit.
"""
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from image_classification.privacy import noise_generator

PyTree = Any

_NOISE_STREAM = 0x401_5E

# The generator of a raw noise key (uint32 words), by its number of words: a secret's
# 128-bit key, or the insecure seeded 64-bit key of earlier versions.
GENERATORS = {noise_generator.KEY_WORDS: noise_generator.NAME, 2: 'threefry2x32'}
_IMPLS = {noise_generator.KEY_WORDS: noise_generator.THREEFRY4X32, 2: 'threefry2x32'}


def generator(num_words: int) -> str:
  """The generator of a raw noise key of ``num_words`` uint32 words."""
  try:
    return GENERATORS[int(num_words)]
  except KeyError:
    raise ValueError(f'a raw noise key has {sorted(GENERATORS)} uint32 words, got '
                     f'{num_words}') from None


def base_noise_key(raw) -> jax.Array:
  """The typed JAX key of a raw noise key (uint32[4] or uint32[2], see GENERATORS); a
  typed key is returned as it is."""
  if jax.dtypes.issubdtype(getattr(raw, 'dtype', np.uint32), jax.dtypes.prng_key):
    return raw
  raw = jnp.asarray(raw, dtype=jnp.uint32)
  generator(raw.shape[-1])  # a bad length is a ValueError naming the lengths
  return jax.random.wrap_key_data(raw, impl=_IMPLS[raw.shape[-1]])


def step_noise_key(base_key, step) -> jax.Array:
  """The noise key of training step ``step``: unique per step, independent of data
  keys. ``base_key``: a raw noise key (uint32 words) or a typed one."""
  key = base_noise_key(base_key)
  return jax.random.fold_in(jax.random.fold_in(key, _NOISE_STREAM), step)


def _is_wide(key) -> bool:
  """Whether ``key`` is a typed key of a secret's 128-bit generator."""
  return (jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key)
          and jax.random.key_data(key).shape[-1] == noise_generator.KEY_WORDS)


def standard_normals(leaves: list, key: jax.Array) -> list:
  """Independent N(0, 1) draws shaped like ``leaves`` (their shapes and dtypes).

  A 128-bit key: one float32 draw of all the coordinates, cut into the leaves in
  order. A seeded two-word key (raw or typed): one split key per leaf, exactly as
  earlier versions drew.
  """
  if not _is_wide(key):
    keys = jax.random.split(key, len(leaves))
    return [jax.random.normal(k, x.shape, x.dtype) for x, k in zip(leaves, keys)]
  sizes = [int(np.prod(x.shape)) for x in leaves]
  flat = jax.random.normal(key, (sum(sizes),), jnp.float32)
  bounds = np.cumsum([0] + sizes)
  return [flat[a:b].reshape(x.shape).astype(x.dtype)
          for x, a, b in zip(leaves, bounds[:-1], bounds[1:])]


def add_noise(tree: PyTree, key: jax.Array, stddev: float) -> PyTree:
  """tree + N(0, stddev^2) per coordinate, independent across coordinates."""
  leaves, treedef = jax.tree_util.tree_flatten(tree)
  noisy = [x + stddev * z for x, z in zip(leaves, standard_normals(leaves, key))]
  return jax.tree_util.tree_unflatten(treedef, noisy)
