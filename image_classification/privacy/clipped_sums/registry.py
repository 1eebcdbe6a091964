"""Clipped-sum implementations chosen by name (``config.training.per_example_grads``).

Every implementation has ONE contract::

  fn(loss_fn, params, views, labels, keys, mask, clipping_norm)
      -> (clipped_sum, norms [B], valid [B], losses [B])

``loss_fn(params, views_k [K, ...], label, key) -> scalar`` is the mean loss over the K
augmult views of ONE example. ``clipped_sum`` is a tree shaped like ``params``: the sum
over the examples of each example's gradient (the mean over its K views) scaled to L2
norm at most ``clipping_norm``; an example with ``mask`` False or a non-finite norm
contributes exactly zero (``valid`` marks the others). So adding or removing one example
moves the sum by at most C, replacing one by at most 2C, whichever implementation runs.
``norms`` are the unclipped per-example norms, ``losses`` the per-example losses.
Implementations differ in speed and memory only; tests/privacy/clipped_sums/ checks that
each gives the reference's ('vmap') sum and respects the bound under adversarial inputs.
"""
from typing import Any, Callable

from image_classification import registry

ClippedSumFn = Callable[..., tuple[Any, Any, Any, Any]]

_REGISTRY = registry.Registry('clipped-sum implementation')

# Decorator that registers a clipped-sum implementation under a name.
register = _REGISTRY.register


def names() -> tuple[str, ...]:
  """The registered implementations, in registration order ('vmap' first)."""
  return tuple(_REGISTRY)


def get(name: str) -> ClippedSumFn:
  """The implementation called ``name``; a ValueError naming the choices otherwise."""
  if name not in _REGISTRY:
    raise ValueError(f'per_example_grads={name!r} is not a clipped-sum implementation; '
                     f'choose one of {list(_REGISTRY)}')
  return _REGISTRY[name]
