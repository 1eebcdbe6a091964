"""Whether the tape-based implementations ('fast', 'ghost') cover a model.

They record the calls of parameter-owning modules (tape.py) and form each example's
gradient layer by layer: with a layer's own rule where one is registered
(layer_rules.py: Dense, Conv, weight-standardised Conv), else with the generic rule
(the module re-run per example). A parameter no recorded call owns (a module run
inside a lifted transform such as nn.scan, a parameter read outside its module) would
get a zero gradient, and a model the tape cannot trace fails (a module inside
nn.remat or nn.scan leaks the recorded tracers into the program as constants).
``check`` traces one tiny batch abstractly (jax.make_jaxpr on shapes: nothing is
compiled or run) and says which.

Privacy: a model that is not fully covered is never trained with a tape-based
implementation; the caller falls back to 'vmap', the reference, which differentiates
the whole model per example.
"""
import collections
import dataclasses
from typing import Any, Callable

import jax

from image_classification.privacy.clipped_sums import registry
from image_classification.privacy.clipped_sums import tape

TAPE_BASED = ('fast', 'ghost')


@dataclasses.dataclass(frozen=True)
class Coverage:
  """``problem``: None when the implementation covers every parameter, else why not;
  ``rules``: layer rule name -> number of recorded calls using it."""
  problem: str | None
  rules: dict

  def describe(self) -> str:
    return ', '.join(f'{n} x {rule}' for rule, n in sorted(self.rules.items()))


def _leaf_paths(params) -> set:
  return {tuple(str(getattr(k, 'key', k)) for k in path)
          for path, _ in jax.tree_util.tree_flatten_with_path(params)[0]}


def check(name: str, loss_fn: Callable, params: Any, views, labels, keys, mask,
          clipping_norm: float) -> Coverage:
  """Traces implementation ``name`` (registry contract) on abstract inputs.

  ``params``, ``views`` [B, K, ...], ``labels`` [B], ``keys`` [B, 2], ``mask`` [B]
  may be jax.ShapeDtypeStructs. An implementation outside TAPE_BASED covers every
  model by construction.
  """
  if name not in TAPE_BASED:
    return Coverage(None, {})
  recorded = {}

  def run(p, v, y, k, m):
    recorded['calls'] = tape.record(loss_fn, p, v, y, k).calls
    return registry.get(name)(loss_fn, p, v, y, k, m, clipping_norm)

  try:
    traced = jax.make_jaxpr(run)(params, views, labels, keys, mask)
  except Exception as e:  # pylint: disable=broad-except
    # Whatever the reason, the reference path is exact for every model.
    return Coverage(f'{name!r} cannot trace the model ({type(e).__name__}: '
                    f'{" ".join(str(e).split())[:300]})', {})
  if any(isinstance(c, jax.core.Tracer) for c in traced.consts):
    # A module inside a lifted transform (nn.remat, ...) leaked the tape a tracer of
    # the transform's own trace: the program would not run.
    return Coverage(f'{name!r} cannot trace the model: a layer runs inside a lifted '
                    'transform (e.g. nn.remat or nn.scan)', {})
  calls = recorded['calls']
  rules = dict(collections.Counter(c.rule.name for c in calls))
  owned = {tuple(c.path) + (n,) for c in calls for n in c.own}
  missing = sorted('/'.join(p) for p in _leaf_paths(params) - owned)
  if missing:
    return Coverage(f'{name!r} sees no layer call owning parameters {missing[:5]}'
                    + (f' and {len(missing) - 5} more' if len(missing) > 5 else '')
                    + ' (e.g. run inside nn.scan or nn.remat)', rules)
  return Coverage(None, rules)
