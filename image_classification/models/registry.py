"""Models chosen by name.

Every model is a flax.linen Module called as ``model.apply(variables, images,
is_training=...)`` on images of shape [batch, height, width, channels] and returning
logits of shape [batch, num_classes]. A factory registered here takes
``num_classes`` plus the family's own keyword arguments (``config.model.kwargs``).
"""
import dataclasses
from typing import Callable

import flax.linen as nn

ModelFactory = Callable[..., nn.Module]

_REGISTRY: dict[str, ModelFactory] = {}


def register(name: str) -> Callable[[ModelFactory], ModelFactory]:
  """Decorator that registers ``factory`` under ``name``."""

  def decorator(factory: ModelFactory) -> ModelFactory:
    if name in _REGISTRY:
      raise ValueError(f'model {name!r} is registered twice')
    _REGISTRY[name] = factory
    return factory

  return decorator


def available() -> list[str]:
  _import_families()
  return sorted(_REGISTRY)


def build(name: str, num_classes: int, **kwargs) -> nn.Module:
  """Builds the model registered as ``name``; raises ValueError naming the choices."""
  _import_families()
  if name not in _REGISTRY:
    raise ValueError(
        f'config.model.name={name!r} is not a known model; choose one of '
        f'{sorted(_REGISTRY)}')
  try:
    return _REGISTRY[name](num_classes=num_classes, **kwargs)
  except TypeError as e:
    raise ValueError(f'config.model.kwargs do not fit model {name!r}: {e}') from e


def keyword_arguments(name: str) -> list[str]:
  """The names ``config.model.kwargs`` may set for model ``name``."""
  _import_families()
  module = _REGISTRY[name](num_classes=2)
  return sorted(f.name for f in dataclasses.fields(module)
                if f.init and f.name not in ('num_classes', 'parent', 'name'))


def _import_families() -> None:
  """Imports every family module so that its @register calls run."""
  # pylint: disable=g-import-not-at-top,unused-import
  import importlib
  for module in ('cnn', 'wide_resnet', 'nf_resnet', 'nfnet'):
    try:
      importlib.import_module(f'image_classification.models.{module}')
    except ModuleNotFoundError as e:
      if e.name != f'image_classification.models.{module}':
        raise
