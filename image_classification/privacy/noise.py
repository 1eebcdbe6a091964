"""The Gaussian mechanism of DP-SGD: noise added once per logical batch.

``add_noise`` adds N(0, (sigma * C)^2) independently to every coordinate of the clipped
sum. It must be called exactly once per logical batch, after summing over micro-batches
and devices, with a key that is the same on every device. The trainer derives it from
the run's secret base noise key (privacy/mechanism_secret.py: OS entropy, never
config.seed) and the step number, so it never repeats across steps or runs and is
independent of the keys that order the data.
"""
from typing import Any

import jax
import jax.numpy as jnp

PyTree = Any

_NOISE_STREAM = 0x401_5E


def step_noise_key(base_key: jax.Array, step) -> jax.Array:
  """The noise key of training step ``step``: unique per step, independent of data keys."""
  return jax.random.fold_in(jax.random.fold_in(base_key, _NOISE_STREAM), step)


def add_noise(tree: PyTree, key: jax.Array, stddev: float) -> PyTree:
  """tree + N(0, stddev^2) per coordinate; one independent key per leaf."""
  leaves, treedef = jax.tree_util.tree_flatten(tree)
  keys = jax.random.split(key, len(leaves))
  noisy = [x + stddev * jax.random.normal(k, x.shape, x.dtype) for x, k in zip(leaves, keys)]
  return jax.tree_util.tree_unflatten(treedef, noisy)

