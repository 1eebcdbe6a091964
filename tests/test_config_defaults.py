"""Every default is written once, in configs/base.py.

A config reaches the code whole: launch.py and api.config check a config file against
base.get_config(), and a workdir's config.json is laid over it
(workdir/saved_config.py). So ``config.training.get('compute_dtype', 'float32')``
restates a default and can drift from it; the code reads the field by attribute
instead. The check below reads the package's source: a ``.get('<name>'`` on a config
section, where <name> is a leaf field of base.get_config(), is refused.

A receiver counts as a config section when it is a chain of names (no call inside)
that mentions ``config``, ``cfg``, ``*_config`` or a section (``x.data``,
``x.training``, ...), or a local name assigned from one (``t = config.training``).
JSON rows read back from run files are plain dicts under other names and pass.
"""
import ast
import json
import os
import pathlib
import re

import ml_collections
import pytest

from configs import base
from image_classification.workdir import run_files
from image_classification.workdir import saved_config

ROOT = pathlib.Path(__file__).resolve().parents[1]
SECTIONS = ('data', 'model', 'training', 'privacy', 'audit', 'wandb', 'optimizer',
            'lr_schedule', 'ema')
# Calls allowed for now, each (file, field); none are left. An entry that no longer
# occurs fails the test too, so that the list only shrinks.
PENDING = set()


def _leaves(config: ml_collections.ConfigDict, prefix: str = '') -> set[str]:
  """The names of base's leaf fields and open groups (not the fields inside those:
  a model's keyword arguments are not base's)."""
  names = set()
  for key, value in config.items():
    if prefix + key in base.OPEN_GROUPS:
      names.add(key)
    elif isinstance(value, ml_collections.ConfigDict):
      names |= _leaves(value, prefix + key + '.')
    else:
      names.add(key)
  return names


LEAVES = _leaves(base.get_config())


def _chain(node) -> list[str] | None:
  """['config', 'training'] for ``config.training``; None unless names and dots."""
  parts = []
  while isinstance(node, ast.Attribute):
    parts.append(node.attr)
    node = node.value
  if not isinstance(node, ast.Name):
    return None
  return [node.id] + parts[::-1]


def _names_a_config(parts: list[str] | None, aliases: set[str]) -> bool:
  if not parts:
    return False
  root = parts[0]
  return (root in ('config', 'cfg') or root.endswith('_config') or root in aliases
          or any(p in SECTIONS for p in parts[1:]))


def restated_defaults(source: str) -> list[tuple[int, str]]:
  """(line, field) of each ``.get('<base leaf>'`` on a config section in ``source``."""
  tree = ast.parse(source)
  aliases = set()
  for node in ast.walk(tree):  # t = config.training; t, p = config.training, ...
    if isinstance(node, ast.Assign) and len(node.targets) == 1:
      target, value = node.targets[0], node.value
      pairs = ([(target, value)] if isinstance(target, ast.Name) else
               list(zip(target.elts, value.elts))
               if isinstance(target, ast.Tuple) and isinstance(value, ast.Tuple)
               and len(target.elts) == len(value.elts) else [])
      for name, expr in pairs:
        if isinstance(name, ast.Name) and _names_a_config(_chain(expr), set()):
          aliases.add(name.id)
  found = []
  for node in ast.walk(tree):
    if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
        and node.func.attr == 'get' and node.args
        and isinstance(node.args[0], ast.Constant) and node.args[0].value in LEAVES
        and _names_a_config(_chain(node.func.value), aliases)):
      found.append((node.lineno, node.args[0].value))
  return found


def _package_files():
  return sorted([*(ROOT / 'image_classification').rglob('*.py'), ROOT / 'launch.py'])


def test_no_get_restates_a_default_of_base():
  found = {(str(path.relative_to(ROOT)), field, line)
           for path in _package_files()
           for line, field in restated_defaults(path.read_text())}
  new = sorted(f'{file}:{line}: .get({field!r}, ...) restates configs/base.py; read '
               f'the field by attribute' for file, field, line in found
               if (file, field) not in PENDING)
  assert not new, '\n'.join(new)
  stale = PENDING - {(file, field) for file, field, _ in found}
  assert not stale, f'no longer found, remove from PENDING: {sorted(stale)}'


@pytest.mark.parametrize('planted, field', [
    ("def f(config):\n  return config.training.get('compute_dtype', 'float32')\n",
     'compute_dtype'),
    ("def f(config):\n  t = config.training\n  return t.get('num_steps', 0)\n",
     'num_steps'),
    ("def f(data_config):\n  return data_config.get('image_size') or 0\n",
     'image_size'),
    ("def f(config):\n  d, p = config.data, config.privacy\n"
     "  return p.get('delta')\n", 'delta'),
])
def test_the_check_catches_a_planted_get(planted, field):
  assert restated_defaults(planted) == [(planted[:planted.index('.get(')].count('\n')
                                         + 1, field)]


def test_the_check_leaves_plain_rows_and_open_groups_alone():
  source = ("def f(config, row, summary):\n"
            "  a = row.get('delta')\n"                       # a JSON row
            "  b = summary.get('status')\n"
            "  c = config.model.kwargs.get('normalization')\n"  # an open group
            "  d = (config.get('model') or {}).get('pretrained_path')\n"  # read JSON
            "  return a, b, c, d\n")
  assert restated_defaults(source) == []


def test_a_saved_config_takes_base_defaults_for_what_it_lacks(tmp_path):
  """config.json of an older version (a field missing) reads as base's default; a
  field base does not define is refused by name; open groups keep any field."""
  config = base.get_config()
  config.model.kwargs = ml_collections.ConfigDict({'channels': [8, 16]})
  saved = json.loads(config.to_json())
  del saved['training']['compute_dtype']
  saved['training']['batch_size'] = 64
  (tmp_path / run_files.CONFIG).write_text(json.dumps(saved))
  restored = saved_config.get_config(str(tmp_path))
  assert restored.training.compute_dtype == base.get_config().training.compute_dtype
  assert restored.training.batch_size == 64
  assert restored.model.kwargs.channels == (8, 16)
  saved['data']['colour'] = 'blue'
  (tmp_path / run_files.CONFIG).write_text(json.dumps(saved))
  with pytest.raises(run_files.RunFileError, match=re.escape('config.data.colour')):
    saved_config.get_config(str(tmp_path))
  assert os.path.exists(tmp_path / run_files.CONFIG)
