"""One's own Flax model, named in the config instead of registered in the package.

  config.model.name = 'my_package.my_module:MyModel'   # an importable module
  config.model.name = 'path/to/my_model.py:MyModel'    # a file (relative to the
                                                       # current folder, or absolute)

``MyModel`` is a flax.linen Module class (or a function returning one). It is built as
``MyModel(num_classes=..., **config.model.kwargs)`` (plus ``dtype=`` when
``config.training.compute_dtype`` is not float32, so it then needs a ``dtype`` field)
and applied like the package's models: ``model.apply({'params': p}, images,
is_training=...)`` on float32 images [batch, H, W, C] (scaled to [0, 1] and
standardised with the dataset's mean and std) returning logits [batch, num_classes].
A module path is imported as Python imports it, with the current folder tried last.

Privacy: what the model may do is checked before anything compiles
(models/checks.py): no BatchNorm or other state besides 'params' (docs/privacy.md,
invariant 5). Its per-example gradients use the package's fast per-layer rules for
the layers they cover and the generic per-example rule for any other layer
(privacy/clipped_sums/layer_rules.py); a model the fast paths cannot trace is trained
with the reference 'vmap' (training/loop.py says which one ran).
"""
import dataclasses
import hashlib
import importlib
import importlib.util
import inspect
import os
import sys
from typing import Callable

import flax.linen as nn

from image_classification.models import checks

SEPARATOR = ':'
HOW = ("your own Flax module as 'my_package.my_module:MyModel' or "
       "'path/to/file.py:MyModel' (docs/custom_models.md)")


def is_custom(name: str) -> bool:
  """Whether ``name`` names a user's model ('module:Class' or 'file.py:Class')."""
  return isinstance(name, str) and SEPARATOR in name


def _split(name: str) -> tuple[str, str]:
  where, _, attribute = name.rpartition(SEPARATOR)
  if not where or not attribute.isidentifier():
    raise checks.ModelError(f'config.model.name={name!r}: give {HOW}')
  return where, attribute


def _is_file(where: str) -> bool:
  return where.endswith('.py') or '/' in where or os.sep in where


def canonical_name(name: str) -> str:
  """``name`` with a file path made absolute (the export's model card keeps it, so
  that --predict finds the file from any folder); other names unchanged."""
  if not is_custom(name):
    return name
  where, attribute = _split(name)
  return (f'{os.path.abspath(where)}{SEPARATOR}{attribute}' if _is_file(where)
          else name)


def _import_file(name: str, path: str):
  if not os.path.isfile(path):
    raise checks.ModelError(f'config.model.name={name!r}: {path!r} is not a file; give '
                     f'{HOW}')
  path = os.path.abspath(path)
  module_name = f'_user_model_{hashlib.sha1(path.encode()).hexdigest()[:12]}'
  if module_name in sys.modules:
    return sys.modules[module_name]
  spec = importlib.util.spec_from_file_location(module_name, path)
  module = importlib.util.module_from_spec(spec)
  sys.modules[module_name] = module
  folder = os.path.dirname(path)
  sys.path.insert(0, folder)  # so that the file can import its neighbours
  try:
    spec.loader.exec_module(module)
  except Exception as e:
    del sys.modules[module_name]
    raise checks.ModelError(f'config.model.name={name!r}: importing {path} failed: '
                     f'{type(e).__name__}: {e}') from e
  finally:
    sys.path.remove(folder)
  return module


def _import_module(name: str, where: str):
  try:
    return importlib.import_module(where)
  except ModuleNotFoundError as e:
    top = where.split('.')[0]
    if e.name != top or os.getcwd() in sys.path:
      raise checks.ModelError(f'config.model.name={name!r}: cannot import {where!r} '
                       f'({e}); put its folder on PYTHONPATH or give a file path '
                       f"'path/to/file.py:{_split(name)[1]}'") from e
  sys.path.append(os.getcwd())  # `python launch.py` puts launch.py's folder first
  return _import_module(name, where)


def factory(name: str) -> Callable[..., nn.Module]:
  """The class (or function) that ``name`` points at; ModelError saying what is
  wrong (no such file or module, no such attribute, not a Flax module)."""
  where, attribute = _split(name)
  module = _import_file(name, where) if _is_file(where) else _import_module(name, where)
  if not hasattr(module, attribute):
    defined = sorted(k for k, v in vars(module).items()
                     if isinstance(v, type) and issubclass(v, nn.Module)
                     and v.__module__ == module.__name__)
    raise checks.ModelError(f'config.model.name={name!r}: {where} defines no {attribute!r}'
                     + (f'; its Flax modules: {defined}' if defined else ''))
  found = getattr(module, attribute)
  if not callable(found):
    raise checks.ModelError(f'config.model.name={name!r}: {attribute} is not a Flax module '
                     'class or a function returning one')
  return found


def keyword_arguments(name: str) -> list[str]:
  """The names ``config.model.kwargs`` may set for the user's model."""
  found = factory(name)
  if isinstance(found, type) and dataclasses.is_dataclass(found):
    return sorted(f.name for f in dataclasses.fields(found)
                  if f.init and f.name not in ('num_classes', 'parent', 'name', 'dtype'))
  return sorted(p for p in inspect.signature(found).parameters
                if p not in ('num_classes', 'dtype'))


def _takes_is_training(module: nn.Module) -> bool:
  parameters = inspect.signature(type(module).__call__).parameters
  return 'is_training' in parameters or any(
      p.kind == inspect.Parameter.VAR_KEYWORD for p in parameters.values())


def build(name: str, num_classes: int, dtype=None, **kwargs) -> nn.Module:
  """The user's model ``name`` built with num_classes and the config's model kwargs;
  ``dtype``: the compute dtype (None: the model's own default, float32)."""
  found = factory(name)
  if dtype is not None:
    fields = ({f.name for f in dataclasses.fields(found)}
              if isinstance(found, type) and dataclasses.is_dataclass(found)
              else set(inspect.signature(found).parameters))
    if 'dtype' not in fields:
      raise checks.ModelError(f'config.model.name={name!r} has no dtype field, which '
                       "config.training.compute_dtype='bfloat16' sets (the dtype of "
                       "its layers); add one or use compute_dtype='float32'")
    kwargs['dtype'] = dtype
  try:
    module = found(num_classes=num_classes, **kwargs)
  except TypeError as e:
    raise checks.ModelError(f'config.model.kwargs={kwargs} do not fit model {name!r} ({e}); '
                     f'it takes num_classes and {keyword_arguments(name)}') from e
  if not isinstance(module, nn.Module):
    raise checks.ModelError(f'config.model.name={name!r} gave a {type(module).__name__}, not '
                     'a flax.linen Module')
  if not _takes_is_training(module):
    raise checks.ModelError(f'config.model.name={name!r}: {type(module).__name__}.__call__ '
                     'must take is_training (True in training steps, False for '
                     'evaluation), e.g. def __call__(self, x, is_training: bool)')
  return module
