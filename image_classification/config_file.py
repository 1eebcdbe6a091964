"""Loading an experiment's config file, ``--config=FILE.py[:ARG]``, with one-line errors.

``load(spec, schema=...)`` runs FILE's ``get_config()`` (``get_config(ARG)`` when
':ARG' follows the file name) and returns its ConfigDict. Whatever is wrong raises
``ConfigFileError``, one line that names the file and the fix:

* FILE is missing (the closest name in its folder is suggested), a folder, or not a
  .py file;
* FILE is not valid Python (the line of the syntax error), or fails while it runs
  (the line in FILE and the exception);
* FILE has no ``get_config()``; ':ARG' is given to a ``get_config()`` that takes no
  argument, or left out where one is required; ``get_config(ARG)`` refuses ARG (its
  own message, which names the arguments it accepts: configs/common.py's
  ``parse_arg``); the result is not a ConfigDict;
* with a ``schema`` (launch.py passes configs/base.py's ``get_config()``): the file
  sets a field the schema does not define (did you mean ...?), or lacks one it
  defines. Groups in ``open_groups`` (configs/base.py's ``OPEN_GROUPS``: model.kwargs,
  the keyword arguments of the model's constructor) may hold any fields. A misspelt
  ``config.training.batch_sise = 3`` used to be kept beside the real batch_size and
  the run trained at the default.

``missing_field`` / ``did_you_mean`` / ``override_error`` word an override of a field
the config lacks (``--config.training.bach_size=8``) the same way.

``FlagParser`` is the parser of launch.py's --config flag, so that ml_collections'
config_flags still applies the ``--config.a.b=v`` overrides to the loaded config.

Nothing here imports JAX: launch.py parses its flags (and loads the config) before
--host_devices sets the device count.
"""
import difflib
import importlib.util
import inspect
import os
import sys
import traceback
from typing import Callable, Sequence

from absl import flags
import ml_collections


class ConfigFileError(Exception):
  """A config file that cannot be used. ``reason``: why, and what fixes it.

  Not a ValueError: absl would reword it as a flag value error.
  """

  def __init__(self, spec: str, reason: str):
    super().__init__(f'--config={spec}: {reason}')
    self.spec = spec
    self.reason = reason


# ------------------------------------------------------------------ fields
def missing_field(config, path: str) -> tuple[str, str, list[str]] | None:
  """For a dotted ``path`` that ``config`` lacks: (the parent's path, the first key
  missing, the keys the parent holds); None when the field exists."""
  node, done = config, []
  for key in path.split('.'):
    if not hasattr(node, 'keys') or key not in node:
      return '.'.join(done), key, sorted(node.keys()) if hasattr(node, 'keys') else []
    node = node[key]
    done.append(key)
  return None


def did_you_mean(config, path: str) -> str:
  """' (did you mean config.a.b?)' for a field ``config`` lacks, or ''."""
  missing = missing_field(config, path)
  if missing is None:
    return ''
  parent, key, held = missing
  close = difflib.get_close_matches(key, held, n=1)
  return (f' (did you mean config.{parent + "." if parent else ""}{close[0]}?)'
          if close else '')


def override_error(config, spec: str, path: str,
                   open_groups: Sequence[str] = ()) -> str:
  """The message for ``--config.PATH=v`` when the config of ``spec`` lacks PATH.

  Only a field of an ``open_groups`` group (a model's keyword arguments) can be added
  to a config file; any other field must be one the schema defines, so the message
  points to the existing fields instead."""
  parent, _, held = missing_field(config, path) or ('', '', [])
  text = (f'--config.{path}: {spec} has no field config.{path}'
          f'{did_you_mean(config, path)}'
          + (f'; config.{parent} holds {held}' if parent else ''))
  if any(parent == g or parent.startswith(g + '.') for g in open_groups):
    return text + ('. An override can only set a field the config file defines: add '
                   f'it to the config file (e.g. config.{path} = <value> in '
                   'get_config())')
  return text + ('. The config fields are fixed by configs/base.py (docs/configs.md '
                 'lists them): check the spelling')


def _walk(config, schema, open_groups: Sequence[str], prefix: str = ''):
  """(fields ``config`` sets that ``schema`` lacks, fields ``schema`` has that
  ``config`` lacks), as dotted paths; open groups are not looked into."""
  extra, lacking = [], []
  for key in config.keys():
    path = prefix + key
    if key not in schema:
      extra.append(path)
    elif (path not in open_groups and isinstance(config[key], ml_collections.ConfigDict)
          and isinstance(schema[key], ml_collections.ConfigDict)):
      more, less = _walk(config[key], schema[key], open_groups, path + '.')
      extra += more
      lacking += less
  lacking += [prefix + key for key in schema.keys() if key not in config]
  return extra, lacking


def check_fields(config: ml_collections.ConfigDict, schema: ml_collections.ConfigDict,
                 open_groups: Sequence[str] = (), file: str = 'the config file',
                 schema_name: str = 'the schema') -> None:
  """Raises ValueError (one line) when ``config`` sets a field ``schema`` does not
  define, outside ``open_groups``, or lacks one it defines."""
  extra, lacking = _walk(config, schema, tuple(open_groups))
  if extra:
    more = f' (and {len(extra) - 1} more: {extra[1:]})' if len(extra) > 1 else ''
    groups = ', '.join(f'config.{g}' for g in open_groups)
    raise ValueError(
        f'{file} sets config.{extra[0]}, which {schema_name} does not define'
        f'{did_you_mean(schema, extra[0])}{more}. A config file can set only the '
        f'fields of {schema_name}' + (f' (and any field under {groups})' if groups
                                      else '')
        + f': fix the name, or add the field to {schema_name} if the code reads it')
  if lacking:
    raise ValueError(
        f'{file} lacks config.{lacking[0]}'
        + (f' and {len(lacking) - 1} more field(s)' if len(lacking) > 1 else '')
        + f' of {schema_name}: build the config from it (config = base.get_config() '
        'in get_config(), then change what differs)')


# ------------------------------------------------------------------ the file
def _line_in(error: BaseException, path: str) -> str:
  """'line N: ' of the deepest frame of ``error``'s traceback inside ``path``."""
  lines = [frame.lineno for frame in traceback.extract_tb(error.__traceback__)
           if os.path.abspath(frame.filename) == os.path.abspath(path)]
  return f'line {lines[-1]}: ' if lines else ''


def _example(folder: str) -> str:
  """', e.g. FOLDER/quickstart.py': a config file in ``folder``, or ''."""
  names = sorted((n != 'quickstart.py', n) for n in os.listdir(folder)
                 if n.endswith('.py') and not n.startswith('_')
                 and n not in ('base.py', 'common.py'))
  return f', e.g. {os.path.join(folder, names[0][1])}' if names else ''


def _missing_file_reason(path: str) -> str:
  folder = os.path.dirname(path) or '.'
  if not os.path.isdir(folder):
    return f'no such file (no folder {folder})'
  names = sorted(n for n in os.listdir(folder) if n.endswith('.py'))
  close = difflib.get_close_matches(os.path.basename(path), names, n=1)
  if close:
    return f'no such file (did you mean {os.path.join(os.path.dirname(path), close[0])}?)'
  return f'no such file; give a config file{_example(folder)}'


def _run_module(spec: str, path: str):
  """FILE executed as a module (after the checks of the file itself)."""
  if not path:
    raise ConfigFileError(spec, 'give a config file, e.g. --config=configs/quickstart.py')
  if os.path.isdir(path):
    raise ConfigFileError(spec, f'{path} is a folder; give a config file in it'
                          f'{_example(path)}')
  if not os.path.exists(path):
    raise ConfigFileError(spec, _missing_file_reason(path))
  if not path.endswith('.py'):
    raise ConfigFileError(spec, 'not a Python file: a config file is a .py file whose '
                          'get_config() returns the config (e.g. configs/quickstart.py)')
  try:
    with open(path, encoding='utf-8') as f:
      source = f.read()
    code = compile(source, path, 'exec')
  except SyntaxError as e:
    raise ConfigFileError(spec, f'line {e.lineno}: {e.msg}: the file is not valid '
                          'Python') from None
  except (OSError, UnicodeDecodeError) as e:
    raise ConfigFileError(spec, f'cannot be read ({e})') from None
  name = '_config_file_' + os.path.splitext(os.path.basename(path))[0]
  module = importlib.util.module_from_spec(
      importlib.util.spec_from_file_location(name, path))
  sys.modules[name] = module  # as an import would: dataclasses and pickle look here
  try:
    exec(code, module.__dict__)  # pylint: disable=exec-used
  except Exception as e:  # pylint: disable=broad-except
    raise ConfigFileError(spec, f'{_line_in(e, path)}running it failed: '
                          f'{type(e).__name__}: {e}') from None
  return module


def _takes_an_argument(get_config) -> tuple[bool, bool]:
  """(get_config accepts one positional argument, it requires one)."""
  try:
    params = list(inspect.signature(get_config).parameters.values())
  except (TypeError, ValueError):
    return True, False
  kinds = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD,
           inspect.Parameter.VAR_POSITIONAL)
  positional = [p for p in params if p.kind in kinds]
  required = [p for p in positional if p.default is p.empty
              and p.kind != p.VAR_POSITIONAL]
  return bool(positional), bool(required)


def load(spec: str, schema: ml_collections.ConfigDict | None = None,
         open_groups: Sequence[str] = (), schema_name: str = 'configs/base.py'
         ) -> ml_collections.ConfigDict:
  """FILE's config for ``spec`` = 'FILE' or 'FILE:ARG' (see the module docstring)."""
  path, sep, arg = spec.partition(':')
  module = _run_module(spec, path)
  get_config = getattr(module, 'get_config', None)
  if not callable(get_config):
    raise ConfigFileError(spec, 'defines no get_config(); a config file defines '
                          'get_config() returning an ml_collections.ConfigDict (see '
                          'configs/quickstart.py)')
  accepts, requires = _takes_an_argument(get_config)
  if sep and not accepts:
    raise ConfigFileError(spec, f"{path} takes no argument after ':' (got ':{arg}'); "
                          f'drop it, and set fields with overrides instead, e.g. '
                          '--config.privacy.target_epsilon=8')
  if requires and not sep:
    raise ConfigFileError(spec, f"needs an argument after ':', as {path}:ARG (see the "
                          "file's docstring)")
  try:
    config = get_config(arg) if sep else get_config()
  except (ValueError, FileNotFoundError) as e:  # their messages say what to give
    raise ConfigFileError(spec, str(e)) from None
  except Exception as e:  # pylint: disable=broad-except
    raise ConfigFileError(spec, f'{_line_in(e, path)}get_config() failed: '
                          f'{type(e).__name__}: {e}') from None
  if not isinstance(config, ml_collections.ConfigDict):
    raise ConfigFileError(spec, f'get_config() returned {type(config).__name__}, not an '
                          'ml_collections.ConfigDict')
  if schema is not None:
    try:
      check_fields(config, schema, open_groups, file='the file',
                   schema_name=schema_name)
    except ValueError as e:
      raise ConfigFileError(spec, str(e)) from None
  return config


class FlagParser(flags.ArgumentParser):
  """The parser of launch.py's --config flag: ``load`` with the schema, then locked
  (an override cannot add a field). ``loaded``: the last config it returned.

  ``unchecked``: config files read without the schema (a workdir's own config.json
  through image_classification/workdir/saved_config.py: a run of an older version may lack
  a field added since).
  """

  def __init__(self, schema: Callable[[], ml_collections.ConfigDict],
               open_groups: Sequence[str] = (), unchecked: Sequence[str] = ()):
    self._schema = schema
    self._open_groups = tuple(open_groups)
    self._unchecked = {os.path.abspath(p) for p in unchecked}
    self.loaded = None

  def parse(self, argument):
    if isinstance(argument, ml_collections.ConfigDict):
      return argument
    path = argument.partition(':')[0]
    schema = None if os.path.abspath(path) in self._unchecked else self._schema()
    config = load(argument, schema, self._open_groups)
    config.lock()
    self.loaded = config
    return config

  def flag_type(self):
    return 'config object'
