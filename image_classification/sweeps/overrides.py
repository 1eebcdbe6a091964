"""Applying a point's overrides to the base config with ml_collections' own machinery.

``config_flags.config_path`` is what sets ``--config.a.b=v`` on the command line: the
same path syntax (dotted fields, ``a.b[0]`` items), the same refusal of fields the
config does not define, and ConfigDict's type rules (an int fits a float field, a
float does not fit an int field). A point is therefore exactly the run that the
command line ``--config.a.b=v ...`` would give; this module only words the errors.
"""
import copy
import difflib
from typing import Any, Mapping

import ml_collections
from ml_collections.config_flags import config_path

from image_classification.sweeps.points import SweepError


def _missing_field(config: ml_collections.ConfigDict, path: str) -> str:
  """Why ``path`` does not name a field of ``config``: the first missing part."""
  keys = path.split('.')
  for i, key in enumerate(keys):
    done = '.'.join(keys[:i])
    holder = config_path.get_value(done, config) if done else config
    if not isinstance(holder, (ml_collections.ConfigDict, dict)):
      return f'{done!r} is a value, not a group of fields'
    if key not in holder:
      where = f'in {done!r}' if done else 'at the top level'
      close = difflib.get_close_matches(key, list(holder.keys()), n=3)
      hint = (f'; did you mean {close}?' if close else
              f'; fields {where}: {sorted(holder.keys())}')
      return f'the config has no {key!r} {where}{hint}'
  return 'no such field'


def apply_overrides(config: ml_collections.ConfigDict,
                    overrides: Mapping[str, Any]) -> ml_collections.ConfigDict:
  """Returns a copy of ``config`` with the dotted-path overrides applied.

  Raises:
    SweepError: naming the field that does not exist, is a group of fields, or
      cannot hold the value (with ml_collections' reason).
  """
  new = copy.deepcopy(config)
  for path, value in overrides.items():
    if not isinstance(path, str) or not path:
      raise SweepError(f'field names must be dotted strings, got {path!r}')
    try:
      current = config_path.get_value(path, new)
    except (KeyError, IndexError, AttributeError, ValueError):
      raise SweepError(f'field {path!r}: {_missing_field(new, path)}') from None
    if isinstance(current, ml_collections.ConfigDict):
      raise SweepError(f'field {path!r} is a group of fields; set its fields '
                       'one by one')
    try:
      config_path.set_value(path, new, value)
    except (TypeError, ValueError) as e:
      raise SweepError(f'field {path!r} cannot be set to {value!r}: {e}') from e
  return new
