"""Loading a sweep file: a Python file whose ``get_sweep()`` returns the points."""
import hashlib
import importlib.machinery
import importlib.util
import os
from typing import Mapping, Optional, Sequence

import ml_collections

from image_classification.sweeps.overrides import apply_overrides
from image_classification.sweeps.points import Point
from image_classification.sweeps.points import point_name
from image_classification.sweeps.points import SweepError


def _import(path: str):
  """The sweep file as a module (a name unique to its path, not in sys.modules)."""
  module_name = '_sweep_' + hashlib.sha1(
      os.path.abspath(path).encode('utf-8')).hexdigest()[:12]
  loader = importlib.machinery.SourceFileLoader(module_name, path)
  module = importlib.util.module_from_spec(
      importlib.util.spec_from_loader(module_name, loader))
  try:
    loader.exec_module(module)
  except Exception as e:  # pylint: disable=broad-except
    raise SweepError(f'sweep file {path!r} failed to load: '
                     f'{type(e).__name__}: {e}') from e
  return module


def load_sweep(path: str,
               config: Optional[ml_collections.ConfigDict] = None
               ) -> list[Point]:
  """Loads the points of a sweep file (a Python file with ``get_sweep()``).

  Args:
    path: the sweep file.
    config: when given, every point is checked against it: each field must
      exist and each value must fit the field's type.

  Returns:
    The points, as dicts from dotted config paths to values.

  Raises:
    SweepError: naming the file when it is missing, fails to load, has no
      ``get_sweep``, returns something other than a non-empty list of points,
      or a point does not fit ``config``. Two points with the same folder name
      are refused too.
  """
  path = os.fspath(path)
  if not os.path.isfile(path):
    raise SweepError(f'sweep file {path!r} does not exist')
  get_sweep = getattr(_import(path), 'get_sweep', None)
  if not callable(get_sweep):
    raise SweepError(f'sweep file {path!r} has no get_sweep() function')
  try:
    points = get_sweep()
  except Exception as e:  # pylint: disable=broad-except
    raise SweepError(f'sweep file {path!r}: get_sweep() raised '
                     f'{type(e).__name__}: {e}') from e
  if (isinstance(points, (str, bytes, Mapping)) or
      not isinstance(points, Sequence) or not points):
    raise SweepError(f'sweep file {path!r}: get_sweep() must return a '
                     f'non-empty list of dicts, got {points!r}')
  names: dict[str, int] = {}
  for i, point in enumerate(points):
    if not isinstance(point, Mapping):
      raise SweepError(f'sweep file {path!r}, point {i}: expected a dict of '
                       f'dotted field -> value, got {point!r}')
    name = point_name(point)
    if name in names:
      raise SweepError(f'sweep file {path!r}: points {names[name]} and {i} '
                       f'share the folder name {name!r}')
    names[name] = i
    if config is not None:
      try:
        apply_overrides(config, point)
      except SweepError as e:
        raise SweepError(f'sweep file {path!r}, point {i} ({name}): {e}') from e
  return [dict(p) for p in points]


def load_resources(path: str) -> Optional[dict]:
  """The sweep file's optional ``get_resources()`` (sweeps/resources.py), or None."""
  get_resources = getattr(_import(os.fspath(path)), 'get_resources', None)
  if get_resources is None:
    return None
  try:
    values = get_resources() if callable(get_resources) else None
  except Exception as e:  # pylint: disable=broad-except
    raise SweepError(f'sweep file {path!r}: get_resources() raised '
                     f'{type(e).__name__}: {e}') from e
  if not isinstance(values, Mapping):
    raise SweepError(f'sweep file {path!r}: get_resources() must return a dict, '
                     f'got {values!r}')
  return dict(values)
