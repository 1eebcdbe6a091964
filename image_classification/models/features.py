"""Fixed feature extractors chosen by ``config.model.features`` (e.g. 'scattering').

An extractor is a public, parameter-free function of one image: built from its
configuration and the image shape alone (no data), applied to each example on its
own. The trainer computes the features of every image once, before the first step
(``precompute``), and the model (``config.model.name``, e.g. 'feature_linear') is
trained on them with DP-SGD as on images.

Privacy: since each example's features depend on that example alone and nothing in
the extractor was fitted to data, precomputing them spends no privacy; the DP step
clips the per-example gradients of the model on top, so the sensitivity is still C.
Augmentation would have to be applied to the images before the extractor, so it is
refused with features (config validation); standardisation uses the dataset's public
constants only.

An extractor has ``output_shape`` ([H', W', C'] of one example's features),
``describe()`` (the public prior, printed in privacy.md) and ``__call__`` (float
images [B, H, W, C] standardised -> features [B, H', W', C']).

An extractor module registers its factory with ``@features.register('name')``; the
models package imports it (one line in models/__init__.py), so the table is full
once the package is imported.
"""
import dataclasses

import jax
import ml_collections
import numpy as np

from image_classification import errors
from image_classification import registry as registry_lib
from image_classification.input import augmentation
from image_classification.data import base
from image_classification.data import catalog

_REGISTRY = registry_lib.Registry('feature extractor')

# Decorator that registers an extractor factory(image_shape, **kwargs) under a name.
register = _REGISTRY.register

# The features are stored as float32 and go through augmentation.standardise like
# images do, which divides by 255: (x / 255 - 0) / (1 / 255) gives them back unchanged.
PASS_THROUGH_MEAN = 0.0
PASS_THROUGH_STD = 1.0 / 255.0


def available() -> list[str]:
  return sorted(_REGISTRY)


def validate_config(config: ml_collections.ConfigDict) -> None:
  """config.model.features: a known extractor, and no augmentation (the features are
  computed once from the un-augmented images); raises ConfigError naming the field."""
  m, d = config.model, config.data
  name = m.features
  if not name:
    if m.features_kwargs:
      errors.config_fail('model.features_kwargs', m.features_kwargs.to_dict(),
                         "set only with config.model.features (e.g. 'scattering')")
    return
  if name not in _REGISTRY:
    errors.config_fail('model.features', name, 'unknown feature extractor; choose one '
                       f"of {available()} or '' (none)")
  for field in ('random_crop', 'random_flip', 'random_resized_crop'):
    if d[field]:
      errors.config_fail(f'data.{field}', d[field],
                         f'config.model.features={name!r} computes the features once '
                         'from the un-augmented images, so augmentation cannot be '
                         'applied; set it False')
  if d.augmult != 1:
    errors.config_fail('data.augmult', d.augmult,
                       f'config.model.features={name!r} takes no augmentation, so every '
                       'view would be the same example; set 1')


def build(name: str, image_shape, **kwargs):
  """The extractor ``name`` for images of ``image_shape``; ValueError names the fix."""
  if name not in _REGISTRY:
    raise ValueError(f'config.model.features={name!r} is not a known feature extractor; '
                     f"choose one of {sorted(_REGISTRY)} or '' (none)")
  try:
    return _REGISTRY[name](tuple(image_shape), **kwargs)
  except TypeError as e:
    raise ValueError(f'config.model.features_kwargs do not fit feature extractor '
                     f'{name!r}: {e}') from e


def precompute(splits: base.DatasetSplits, validation, extractor,
               batch_size: int = 1024, compute: bool = True):
  """(splits, validation) with every image replaced by its features.

  The labels, class names, record ids and evaluation note are kept; mean and std
  become the pass-through constants. ``compute=False`` (a dry run) gives shape-only
  stand-ins instead of computing anything.
  """
  shape = tuple(extractor.output_shape)
  channels = shape[-1]
  fn = jax.jit(lambda images: extractor(
      augmentation.standardise(images, splits.mean, splits.std)))

  def convert(source, what):
    if source is None:
      return None
    if not compute or getattr(source, 'holds_no_images', False):
      return catalog.ShapeOnlySource(splits.name, source.num_examples, shape)
    return _features_of(source, fn, shape, batch_size, what, extractor)

  new = dataclasses.replace(
      splits, train=convert(splits.train, 'training'), test=convert(splits.test, 'test'),
      mean=(PASS_THROUGH_MEAN,) * channels, std=(PASS_THROUGH_STD,) * channels)
  return new, convert(validation, 'validation')


def _features_of(source, fn, shape, batch_size, what, extractor) -> base.ArraySource:
  n = source.num_examples
  out = np.zeros((n,) + shape, np.float32)
  labels = np.zeros((n,), np.int32)
  print(f'computing {extractor.describe().split(" fixed")[0]} features of {n:,} '
        f'{what} images', flush=True)
  for start in range(0, n, batch_size):
    idx = np.arange(start, min(start + batch_size, n))
    images, labels[idx] = source.get(idx)
    padded = np.zeros((batch_size,) + images.shape[1:], images.dtype)
    padded[:len(idx)] = images  # one shape: one compilation
    out[idx] = np.asarray(fn(padded))[:len(idx)]
  ids = getattr(source, 'record_ids', None)
  if not isinstance(ids, np.ndarray):
    return base.ArraySource(out, labels)
  return base.ArraySource(out, labels, ids,
                          getattr(source, 'record_ids_kind', base.IDS_FILE_PATHS))

