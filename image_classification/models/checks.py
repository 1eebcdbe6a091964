"""What any model must satisfy for DP-SGD, checked by tracing (nothing compiles).

``inspect(model, image_shape, num_classes, name)`` initialises the model abstractly
(jax.eval_shape), applies it once as at evaluation and once as in a training step,
and records every layer it calls. It refuses, naming the layer:

- BatchNorm, anywhere (also inside the user's own modules): its batch statistics mix
  the examples of a batch, so one example changes the others' gradients and
  per-example clipping no longer bounds its influence (docs/privacy.md, invariant 5);
- any variable collection besides 'params' (e.g. 'batch_stats'): state carried
  across steps that the privatised update does not produce;
- logits that are not [batch, num_classes].
"""
import functools
from typing import Any

import flax.linen as nn

import jax
import jax.numpy as jnp
from image_classification import errors

class ModelError(errors.ConfigError):
  """A model DP-SGD cannot train, or a user's model that cannot be built; the
  message names the layer or the field and the fix."""


# Layer classes whose statistics span the examples of a batch.
CROSS_EXAMPLE_LAYERS = (nn.BatchNorm,)


def _describe(path: tuple) -> str:
  return '/'.join(path) or '(the model itself)'


def inspect(model: nn.Module, image_shape: tuple, num_classes: int,
            name: str) -> Any:
  """The model's abstract variables ({'params': ShapeDtypeStructs}); ModelError,
  naming the layer and the fix, for what DP-SGD cannot train (module docstring).
  TypeError / ValueError from the model's own code (e.g. a bad kwarg) propagate."""
  layers = {}  # path -> class of every module called

  def interceptor(next_fun, args, kwargs, context):
    module = context.module
    layers.setdefault(tuple(module.path), type(module))
    return next_fun(*args, **kwargs)

  def init(key):
    dummy = jnp.zeros((1,) + tuple(image_shape), jnp.float32)
    with nn.intercept_methods(interceptor):
      return model.init({'params': key, 'dropout': key}, dummy, is_training=False)

  def apply(variables, key, is_training):
    images = jnp.zeros((2,) + tuple(image_shape), jnp.float32)
    with nn.intercept_methods(interceptor):
      return model.apply(variables, images, is_training=is_training,
                         rngs={'dropout': key})

  key = jax.random.PRNGKey(0)
  abstract = jax.eval_shape(init, key)
  _refuse_cross_example_layers(layers, name)
  extra = sorted(set(abstract) - {'params'})
  if extra:
    where = sorted({_describe(tuple(str(getattr(k, 'key', k)) for k in path[:-1]))
                    for c in extra
                    for path, _ in jax.tree_util.tree_flatten_with_path(abstract[c])[0]})
    raise ModelError(
        f'config.model.name={name!r} keeps state {extra} besides \'params\' (in '
        f'layers {where}; e.g. BatchNorm\'s batch_stats): statistics across examples '
        'break per-example sensitivity (docs/privacy.md, invariant 5); use GroupNorm, '
        'LayerNorm or a normaliser-free model')
  for is_training in (False, True):
    try:
      logits = jax.eval_shape(  # is_training static: models branch on it in Python
          functools.partial(apply, is_training=is_training), abstract, key)
    finally:
      _refuse_cross_example_layers(layers, name)
    if getattr(logits, 'shape', None) != (2, num_classes):
      raise ModelError(
          f'config.model.name={name!r} returns '
          f'{getattr(logits, "shape", type(logits).__name__)} for 2 images of shape '
          f'{tuple(image_shape)} (is_training={is_training}); it must return logits '
          f'[batch, num_classes] = (2, {num_classes})')
  return abstract


def _refuse_cross_example_layers(layers: dict, name: str) -> None:
  for path, cls in sorted(layers.items()):
    if issubclass(cls, CROSS_EXAMPLE_LAYERS):
      raise ModelError(
          f'config.model.name={name!r}: layer {_describe(path)!r} is a '
          f'{cls.__name__}, whose batch statistics mix the examples of a batch: one '
          "example changes the others' gradients and per-example clipping no longer "
          'bounds its influence (docs/privacy.md, invariant 5; batch_stats are '
          'refused); use nn.GroupNorm or nn.LayerNorm, or a normaliser-free model')
