"""Fixed feature extractors chosen by ``config.model.features`` (e.g. 'scattering').

An extractor is a public, parameter-free function of one image: built from its
configuration and the image shape alone (no data), applied to each example on its
own. The trainer computes the features of every image once, before the first step
(``precompute``), and the model (``config.model.name``, e.g. 'feature_linear') is
trained on them with DP-SGD as on images.

Privacy: since each example's features depend on that example alone and nothing in
the extractor was fitted to data, precomputing them spends no privacy; the DP step
clips the per-example gradients of the model on top, so the sensitivity is still C.
Random augmentation would have to be applied to the images before the extractor, so
it is refused with features (config validation); standardisation uses the dataset's
public constants only.

Fixed views (``config.model.features_shift`` = s > 0): the training images' features
are computed for 5 views of each image, the image itself and its shifts by s pixels
down, up, right and left (the pixels shifted in are 0), stacked on the channel axis
([N, H', W', 5 C']); the DP step takes them apart (augmentation.stacked_views) and
averages the example's loss over its 5 views before the per-example gradient is
clipped: augmentation multiplicity whose views are fixed and public. Each view depends
on that example alone, and the shifts are the same for every example, so nothing is
drawn and no key is involved; the sensitivity is still C. Evaluation and the export
use the image itself (the first view).

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


# The fixed views of config.model.features_shift = s: (dy, dx) in units of s.
SHIFT_DIRECTIONS = ((0, 0), (1, 0), (-1, 0), (0, 1), (0, -1))


def num_views(config: ml_collections.ConfigDict) -> int:
  """How many fixed views each training example has (1: the image alone)."""
  m = config.model
  return len(SHIFT_DIRECTIONS) if m.features and m.features_shift else 1


def shifted(images: np.ndarray, dy: int, dx: int) -> np.ndarray:
  """[N, H, W, C] images moved by dy rows down and dx columns right (negative: up,
  left); the pixels shifted in are 0 (the black background of digits)."""
  out = np.zeros_like(images)
  h, w = images.shape[1:3]
  if abs(dy) >= h or abs(dx) >= w:
    return out
  rows_from, rows_to = (slice(0, h - dy), slice(dy, h)) if dy >= 0 else (
      slice(-dy, h), slice(0, h + dy))
  cols_from, cols_to = (slice(0, w - dx), slice(dx, w)) if dx >= 0 else (
      slice(-dx, w), slice(0, w + dx))
  out[:, rows_to, cols_to] = images[:, rows_from, cols_from]
  return out


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
    if m.features_shift:
      errors.config_fail('model.features_shift', m.features_shift,
                         "set only with config.model.features (e.g. 'scattering'); "
                         'for images use data.augmult with data.random_crop')
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
                       'view would be the same example; set 1 (config.model.'
                       'features_shift gives fixed shifted views instead)')
  _check_shift(m.features_shift, config.data.image_size)


def _check_shift(shift, image_size) -> None:
  if isinstance(shift, bool) or not isinstance(shift, int) or shift < 0:
    errors.config_fail('model.features_shift', shift,
                       'must be an integer >= 0 (pixels; 0: no shifted views)')
  if shift and image_size and shift >= image_size:
    errors.config_fail('model.features_shift', shift,
                       f'shifts every view out of the {image_size}x{image_size} image; '
                       'use a shift of a few pixels (e.g. 1)')


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
               batch_size: int = 1024, compute: bool = True, shift: int = 0):
  """(splits, validation) with every image replaced by its features.

  The labels, class names, record ids and evaluation note are kept; mean and std
  become the pass-through constants. ``shift`` > 0: the training split holds the
  features of the 5 views of each image (SHIFT_DIRECTIONS times ``shift``) stacked on
  the channel axis; the validation and test splits hold the image's own.
  ``compute=False`` (a dry run) gives shape-only stand-ins instead of computing
  anything.
  """
  shape = tuple(extractor.output_shape)
  channels = shape[-1]
  features_of = of_images(extractor, splits.mean, splits.std, batch_size)

  def convert(source, what, shifts=((0, 0),)):
    if source is None:
      return None
    if not compute or getattr(source, 'holds_no_images', False):
      return catalog.ShapeOnlySource(splits.name, source.num_examples,
                                     shape[:-1] + (channels * len(shifts),))
    return _features_of(source, features_of, shape, batch_size, what, extractor,
                        shifts)

  views = tuple((dy * shift, dx * shift) for dy, dx in SHIFT_DIRECTIONS)
  new = dataclasses.replace(
      splits, train=convert(splits.train, 'training', views if shift else ((0, 0),)),
      test=convert(splits.test, 'test'),
      mean=(PASS_THROUGH_MEAN,) * channels, std=(PASS_THROUGH_STD,) * channels)
  return new, convert(validation, 'validation')


def of_images(extractor, mean, std, batch_size: int = 1024):
  """images [m, H, W, C] (raw, standardised with the dataset's public ``mean`` and
  ``std``) -> their features [m, H', W', C'] as float32: what the model sees of raw
  images, e.g. the input audit's canaries (audit/hook.py)."""
  fn = jax.jit(lambda images: extractor(augmentation.standardise(images, mean, std)))

  def features_of(images):
    images = np.asarray(images)
    out = []
    for start in range(0, len(images), batch_size):
      chunk = images[start:start + batch_size]
      padded = np.zeros((batch_size,) + images.shape[1:], images.dtype)
      padded[:len(chunk)] = chunk  # one shape: one compilation
      out.append(np.asarray(fn(padded))[:len(chunk)])
    return np.concatenate(out) if out else np.zeros(
        (0,) + tuple(extractor.output_shape), np.float32)

  return features_of


def _features_of(source, features_of, shape, batch_size, what, extractor,
                 shifts) -> base.ArraySource:
  n, views = source.num_examples, len(shifts)
  out = np.zeros((n,) + shape[:-1] + (shape[-1] * views,), np.float32)
  labels = np.zeros((n,), np.int32)
  of_views = f' x {views} shifted views' if views > 1 else ''
  print(f'computing {extractor.describe().split(" fixed")[0]} features of {n:,} '
        f'{what} images{of_views}', flush=True)
  for start in range(0, n, batch_size):
    idx = np.arange(start, min(start + batch_size, n))
    images, labels[idx] = source.get(idx)
    out[idx] = np.concatenate(  # view v: channels [v C', (v + 1) C')
        [features_of(shifted(images, dy, dx)) for dy, dx in shifts], -1)
  ids = getattr(source, 'record_ids', None)
  if not isinstance(ids, np.ndarray):
    return base.ArraySource(out, labels)
  return base.ArraySource(out, labels, ids,
                          getattr(source, 'record_ids_kind', base.IDS_FILE_PATHS))

