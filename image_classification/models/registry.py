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

The families register themselves when imported: models/__init__.py imports each
family module (one import line per family), whose ``@register('name')`` fills the
table.
"""
import dataclasses
import os
from typing import Callable

import flax.linen as nn
import jax.numpy as jnp
import ml_collections

from image_classification import errors
from image_classification import registry as registry_lib
from image_classification.models import custom

ModelFactory = Callable[..., nn.Module]

_REGISTRY = registry_lib.Registry('model')

# config.training.compute_dtype -> the models' ``dtype``.
COMPUTE_DTYPES = {'float32': jnp.float32, 'bfloat16': jnp.bfloat16}

_fail = errors.config_fail


# Decorator that registers a model factory under a name.
register = _REGISTRY.register


def available() -> list[str]:
  return sorted(_REGISTRY)


def check_name(name: str) -> None:
  """Raises ValueError unless ``name`` is a registered model or the user's own
  model that can be imported (models/custom.py)."""
  if custom.is_custom(name):
    custom.factory(name)
    return
  if name not in _REGISTRY:
    raise ValueError(
        f'config.model.name={name!r} is not a known model; choose one of '
        f'{sorted(_REGISTRY)}, or {custom.HOW}')


def validate_config(config: ml_collections.ConfigDict, dry_run: bool = False) -> None:
  """Checks config.model (but its features: features.validate_config); raises
  ConfigError naming the field. ``dry_run``: a missing pretrained_path is not refused
  (nothing is restored)."""
  m = config.model
  try:  # a registered name, or the user's own model that imports (models/custom.py)
    check_name(m.name)
  except ValueError as e:
    raise errors.ConfigError(str(e)) from e
  norm = m.kwargs.get('normalization', None)  # a model's own keyword (an open group)
  if norm is not None and 'batch' in str(norm).lower():
    _fail('model.kwargs.normalization', norm,
          'BatchNorm mixes statistics across examples, so one example affects the '
          "gradients of others and per-example clipping no longer bounds sensitivity; use "
          "'group_norm' or a normaliser-free model")
  if m.pretrained_path and not dry_run and not os.path.exists(m.pretrained_path):
    _fail('model.pretrained_path', m.pretrained_path,
          'no such checkpoint; point it at pre-trained parameters (see docs/configs.md, '
          'fine-tuning) or leave it empty to train from scratch')
  if 'dtype' in m.kwargs:
    _fail('model.kwargs.dtype', m.kwargs.dtype,
          "is not a model option; set config.training.compute_dtype ('float32' or "
          "'bfloat16') instead")


def build(name: str, num_classes: int, compute_dtype: str = 'float32',
          **kwargs) -> nn.Module:
  """Builds the model registered as ``name`` (or the user's own, models/custom.py);
  raises ValueError naming the choices for an unknown name.

  ``compute_dtype`` (a key of COMPUTE_DTYPES, checked with the config: training/
  config_checks.py) sets the model's ``dtype``; 'float32' leaves the family's default
  (float32), so a family without the field still builds.
  """
  dtype = None if compute_dtype == 'float32' else _dtype(compute_dtype)
  if custom.is_custom(name):
    return custom.build(name, num_classes, dtype, **kwargs)
  check_name(name)
  if dtype is not None:
    kwargs['dtype'] = dtype
  try:
    return _REGISTRY[name](num_classes=num_classes, **kwargs)
  except TypeError as e:
    raise ValueError(f'config.model.kwargs do not fit model {name!r}: {e}') from e


def _dtype(compute_dtype: str):
  """COMPUTE_DTYPES[compute_dtype], or ValueError naming the choices."""
  if compute_dtype not in COMPUTE_DTYPES:
    raise ValueError(f'config.training.compute_dtype={compute_dtype!r} is not known; '
                     f'choose one of {list(COMPUTE_DTYPES)}')
  return COMPUTE_DTYPES[compute_dtype]


def keyword_arguments(name: str) -> list[str]:
  """The names ``config.model.kwargs`` may set for model ``name``."""
  if custom.is_custom(name):
    return custom.keyword_arguments(name)
  module = _REGISTRY[name](num_classes=2)
  return sorted(f.name for f in dataclasses.fields(module)
                if f.init and f.name not in ('num_classes', 'parent', 'name', 'dtype'))
