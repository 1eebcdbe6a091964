"""On-device preprocessing and augmentation multiplicity (augmult).

Standardisation uses fixed public constants (DatasetSplits.mean/std), never statistics
of the private data. Augmentation is per example, from per-example keys, so nothing
here mixes examples: one example's K views depend on that example alone.
"""
import jax
import jax.numpy as jnp


def standardise(images, mean, std):
  """uint8 [..., H, W, C] -> float32, scaled to [0, 1] then (x - mean) / std."""
  x = images.astype(jnp.float32) / 255.0
  return (x - jnp.asarray(mean, jnp.float32)) / jnp.asarray(std, jnp.float32)


def _crop_and_flip(key, image, *, random_crop: bool, random_flip: bool, pad: int):
  """One augmented view of one image [H, W, C]."""
  crop_key, flip_key = jax.random.split(key)
  h, w, _ = image.shape
  if random_crop:
    padded = jnp.pad(image, ((pad, pad), (pad, pad), (0, 0)), mode='reflect')
    dy, dx = jax.random.randint(crop_key, (2,), 0, 2 * pad + 1)
    image = jax.lax.dynamic_slice(padded, (dy, dx, 0), (h, w, image.shape[2]))
  if random_flip:
    flip = jax.random.bernoulli(flip_key)
    image = jnp.where(flip, image[:, ::-1, :], image)
  return image


def augmult_views(keys, images, *, augmult: int, random_crop: bool,
                  random_flip: bool, mean, std, pad: int = 4):
  """Makes K = augmult views of every example.

  Args:
    keys: [B, 2] per-example PRNG keys (raw uint32 keys).
    images: [B, H, W, C] uint8 (or float) images.
  Returns:
    float32 [B, K, H, W, C]. With K = 1 and no augmentation the view is the
    standardised image itself.
  """
  x = standardise(images, mean, std)
  if not (random_crop or random_flip):
    return jnp.repeat(x[:, None], augmult, axis=1)

  def views_of_one(key, image):
    view_keys = jax.random.split(key, augmult)
    return jax.vmap(lambda k: _crop_and_flip(
        k, image, random_crop=random_crop, random_flip=random_flip, pad=pad))(view_keys)

  return jax.vmap(views_of_one)(keys, x)


def stacked_views(images, *, views: int, mean, std):
  """The K = ``views`` fixed views of every example, stored side by side on the channel
  axis (models/features.py, config.model.features_shift): [B, H, W, K C] ->
  standardised float32 [B, K, H, W, C], view k from channels [k C, (k + 1) C).
  Nothing is drawn: each example's views are its own stored values."""
  b, h, w, kc = images.shape
  if kc % views:
    raise ValueError(f'{kc} channels do not hold {views} views of equal size')
  x = jnp.moveaxis(images.reshape(b, h, w, views, kc // views), 3, 1)
  return standardise(x, mean, std)

