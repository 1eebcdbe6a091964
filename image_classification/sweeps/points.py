"""Building a sweep's points (grid, zipped, product) and naming their folders."""
import hashlib
import itertools
import re
from typing import Any, Mapping, Optional, Sequence
from image_classification import errors

Point = dict[str, Any]  # dotted config path -> value

_MAX_NAME_LEN = 120


class SweepError(errors.UserError):
  """A sweep file or one of its points is invalid."""


def _axes(axes: Optional[Mapping[str, Sequence[Any]]],
          more: Mapping[str, Sequence[Any]], what: str) -> dict[str, list]:
  merged = dict(axes or {})
  merged.update(more)
  for path, values in merged.items():
    if isinstance(values, (str, bytes)) or not isinstance(values, Sequence):
      raise SweepError(f'{what}: the values of {path!r} must be a list, '
                       f'got {values!r}')
    if not values:
      raise SweepError(f'{what}: {path!r} has no values')
  return {path: list(values) for path, values in merged.items()}


def grid(axes: Optional[Mapping[str, Sequence[Any]]] = None, /,
         **more: Sequence[Any]) -> list[Point]:
  """Every combination of the given values; the last field varies fastest.

  ``grid({'privacy.target_epsilon': [1, 8], 'seed': [0, 1]})`` gives 4 points.
  Dotted paths go in the mapping (or as ``**{'a.b': [...]}``); plain top-level
  fields may also be keyword arguments: ``grid(seed=[0, 1])``.
  """
  merged = _axes(axes, more, 'grid')
  return [dict(zip(merged, combo)) for combo in itertools.product(
      *merged.values())]


def zipped(axes: Optional[Mapping[str, Sequence[Any]]] = None, /,
           **more: Sequence[Any]) -> list[Point]:
  """Points that take the i-th value of every field (lists of equal length).

  ``zipped({'training.num_steps': [500, 1000], 'privacy.target_epsilon':
  [1, 8]})`` gives 2 points.
  """
  merged = _axes(axes, more, 'zipped')
  lengths = {path: len(values) for path, values in merged.items()}
  if len(set(lengths.values())) > 1:
    raise SweepError(f'zipped: the value lists differ in length: {lengths}')
  return [dict(zip(merged, values)) for values in zip(*merged.values())]


def product(*sweeps: Sequence[Mapping[str, Any]]) -> list[Point]:
  """Every combination of one point from each sweep, merged into one point."""
  points: list[Point] = [{}]
  for sweep in sweeps:
    merged = []
    for a in points:
      for b in sweep:
        both = set(a) & set(b)
        if both:
          raise SweepError(f'product: field(s) {sorted(both)} set twice')
        merged.append({**a, **b})
    points = merged
  return points


def format_value(value: Any) -> str:
  """A value as folder names, tables and command lines show it (floats by repr)."""
  if isinstance(value, float):
    return repr(value)
  return str(value)


def point_name(overrides: Mapping[str, Any]) -> str:
  """A stable, filesystem-safe folder name for a point.

  ``{'privacy.target_epsilon': 1.0, 'seed': 2}`` ->
  'privacy.target_epsilon=1.0,seed=2'. Fields keep the sweep file's order;
  characters other than letters, digits and ``._=,+-`` become '_'; a name
  longer than 120 characters is cut and ends in a hash of the whole point. The
  empty point (the base config unchanged) is named 'base'.
  """
  if not overrides:
    return 'base'
  full = ','.join(f'{path}={format_value(value)}'
                  for path, value in overrides.items())
  name = re.sub(r'[^A-Za-z0-9._=,+-]', '_', full)
  if name[0] in '.-':
    name = '_' + name
  if len(name) > _MAX_NAME_LEN:
    digest = hashlib.sha1(full.encode('utf-8')).hexdigest()[:10]
    name = name[:_MAX_NAME_LEN - 11] + '-' + digest
  return name
