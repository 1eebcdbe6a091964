"""Models chosen by name.

Every model is a flax.linen Module called as ``model.apply(variables, images,
is_training=...)`` on images of shape [batch, height, width, channels] and returning
logits of shape [batch, num_classes]. A factory registered here takes
``num_classes`` plus the family's own keyword arguments (``config.model.kwargs``).

Mixed precision: every family has a ``dtype`` field, the computation dtype of its
layers and activations (parameters stay float32 and the logits are float32). It is
set from ``config.training.compute_dtype`` through ``build(compute_dtype=...)``, not
through ``config.model.kwargs``.

A name with a colon is the user's own model, outside the package
('my_package.my_module:MyModel' or 'path/to/file.py:MyModel'; models/custom.py).
"""
import dataclasses
from typing import Callable

import flax.linen as nn
import jax.numpy as jnp

from image_classification import registry as registry_lib
from image_classification.models import custom

ModelFactory = Callable[..., nn.Module]

_REGISTRY = registry_lib.Registry('model')

# config.training.compute_dtype -> the models' ``dtype``.
COMPUTE_DTYPES = {'float32': jnp.float32, 'bfloat16': jnp.bfloat16}


# Decorator that registers a model factory under a name.
register = _REGISTRY.register


def available() -> list[str]:
  _import_families()
  return sorted(_REGISTRY)


def check_name(name: str) -> None:
  """Raises ValueError unless ``name`` is a registered model or the user's own
  model that can be imported (models/custom.py)."""
  if custom.is_custom(name):
    custom.factory(name)
    return
  _import_families()
  if name not in _REGISTRY:
    raise ValueError(
        f'config.model.name={name!r} is not a known model; choose one of '
        f'{sorted(_REGISTRY)}, or {custom.HOW}')


def build(name: str, num_classes: int, compute_dtype: str = 'float32',
          **kwargs) -> nn.Module:
  """Builds the model registered as ``name`` (or the user's own, models/custom.py);
  raises ValueError naming the choices.

  ``compute_dtype`` (a key of COMPUTE_DTYPES) sets the model's ``dtype``; 'float32'
  leaves the family's default (float32), so a family without the field still builds.
  """
  check_name(name)
  if compute_dtype not in COMPUTE_DTYPES:
    raise ValueError(f'config.training.compute_dtype={compute_dtype!r} is not known; '
                     f'choose one of {list(COMPUTE_DTYPES)}')
  if 'dtype' in kwargs:
    raise ValueError('config.model.kwargs.dtype is not a model option; set '
                     "config.training.compute_dtype ('float32' or 'bfloat16')")
  if custom.is_custom(name):
    return custom.build(name, num_classes, None if compute_dtype == 'float32'
                        else COMPUTE_DTYPES[compute_dtype], **kwargs)
  if compute_dtype != 'float32':
    kwargs['dtype'] = COMPUTE_DTYPES[compute_dtype]
  try:
    return _REGISTRY[name](num_classes=num_classes, **kwargs)
  except TypeError as e:
    raise ValueError(f'config.model.kwargs do not fit model {name!r}: {e}') from e


def keyword_arguments(name: str) -> list[str]:
  """The names ``config.model.kwargs`` may set for model ``name``."""
  if custom.is_custom(name):
    return custom.keyword_arguments(name)
  _import_families()
  module = _REGISTRY[name](num_classes=2)
  return sorted(f.name for f in dataclasses.fields(module)
                if f.init and f.name not in ('num_classes', 'parent', 'name', 'dtype'))


def _import_families() -> None:
  """Imports every family module so that its @register calls run."""
  # pylint: disable=g-import-not-at-top,unused-import
  import importlib
  for module in ('cnn', 'feature_heads', 'wide_resnet', 'nf_resnet', 'nfnet'):
    try:
      importlib.import_module(f'image_classification.models.{module}')
    except ModuleNotFoundError as e:
      if e.name != f'image_classification.models.{module}':
        raise
