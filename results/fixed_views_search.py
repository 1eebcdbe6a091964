"""The fourth MNIST search of results/records.md: do fixed shifted views help?

A fast stand-alone replay of configs/mnist_eps3.py's DP-SGD on MNIST's training set
only (a fixed 10% of it held out for validation, never the test set): ScatterNet J=3
features of the images resized to 32x32 (the platform's extractor and resize), the
31-group per-example GroupNorm, a zero-initialised linear model, Poisson sampling at
q = 4096 / 54000, each example's gradient of its loss averaged over its views, then
clipped to C = 0.1, Gaussian noise of std sigma C per coordinate, divided by 4096, SGD
momentum 0.9, learning rate 8, 528 steps, EMA 0.99 with the platform's warm-up.
sigma 2.582 is what the platform calibrates for these 528 steps at (3, 1e-5) under
PLD (the third search's rows). It is a replay for the search, not the platform's DP
step: it writes the per-example norm of the linear model's gradient in closed form
(the Gram matrices of the views' features and errors), which is why it runs in
minutes.

  python results/fixed_views_search.py MNIST_DIR CACHE.npz views SIGMA SEEDS
  # views: center (the image alone), shift1 (the image and its shifts by 1 pixel down,
  #        up, right, left: config.model.features_shift=1), shift2 (by 2 pixels)
  python results/fixed_views_search.py /path/to/mnist /tmp/views.npz shift1 2.582 0,1

The first call computes the features of the 9 views of the 60,000 training images
(about 13 minutes on a 2-core CPU, 3.8 GB as float16) into CACHE.npz.
"""
import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# pylint: disable=wrong-import-position
from image_classification.data import sources
from image_classification.data.readers import local_files
from image_classification.models import features
from image_classification.models import scattering

SHIFTS = ((0, 0), (1, 0), (-1, 0), (0, 1), (0, -1), (2, 0), (-2, 0), (0, 2), (0, -2))
VIEWS = {'center': [0], 'shift1': [0, 1, 2, 3, 4], 'shift2': [0, 5, 6, 7, 8]}
MNIST_MEAN, MNIST_STD = (0.1307,), (0.3081,)


def view_features(mnist_dir, cache):
  """[60000, 9, 3472] float16 features of the 9 views, and the labels."""
  if os.path.exists(cache):
    z = np.load(cache)
    return z['features'], z['labels']
  data = local_files.load_idx(mnist_dir)
  images = sources._resize_images(data.train.images, 32)  # pylint: disable=protected-access
  of_images = features.of_images(scattering.scattering((32, 32, 1), J=3, L=8),
                                 MNIST_MEAN, MNIST_STD)
  out = []
  for dy, dx in SHIFTS:
    t = time.time()
    out.append(of_images(features.shifted(images, dy, dx)).reshape(len(images), -1)
               .astype(np.float16))
    print(f'view ({dy}, {dx}): {time.time() - t:.0f} s', flush=True)
  out = np.stack(out, 1)
  np.savez(cache, features=out, labels=data.train.labels)
  return out, data.train.labels


def group_norm(x, groups=31, positions=16):
  """The feature_linear model's per-example GroupNorm of [..., 4 * 4 * 217] (HWC)."""
  shape = x.shape
  x = x.reshape(shape[:-1] + (positions, groups, -1))
  mean = x.mean(axis=(-3, -1), keepdims=True)
  var = x.var(axis=(-3, -1), keepdims=True)
  return ((x - mean) / jnp.sqrt(var + 1e-5)).reshape(shape)


def train(x, y, views, sigma, seed, steps=528, batch=4096, clip=0.1, lr=8.0):
  """DP-SGD on the linear model; returns the EMA parameters."""
  n, dim = x.shape[0], x.shape[-1]
  views = np.asarray(views)

  @jax.jit
  def step(params, trace, ema, t, mask, xb, yb, key):
    w, b = params
    xn = group_norm(xb.astype(jnp.float32))                      # [B, K, D]
    err = jax.nn.softmax(xn @ w + b) - jax.nn.one_hot(yb, 10)[:, None]  # [B, K, 10]
    k = xn.shape[1]
    # ||mean_v x_v err_v^T||^2 + ||mean_v err_v||^2 from the Gram matrices
    sq = (jnp.sum(jnp.einsum('bvd,bwd->bvw', xn, xn) * jnp.einsum('bvc,bwc->bvw', err, err),
                  (1, 2)) + jnp.sum(err.sum(1) ** 2, -1)) / k ** 2
    scale = jnp.minimum(1.0, clip / jnp.sqrt(sq + 1e-12)) * mask / k
    gw = jnp.einsum('bvd,bvc,b->dc', xn, err, scale)
    gb = jnp.einsum('bvc,b->c', err, scale)
    kw, kb = jax.random.split(key)
    gw = (gw + sigma * clip * jax.random.normal(kw, gw.shape)) / batch
    gb = (gb + sigma * clip * jax.random.normal(kb, gb.shape)) / batch
    trace = (0.9 * trace[0] + gw, 0.9 * trace[1] + gb)
    params = (w - lr * trace[0], b - lr * trace[1])
    decay = jnp.minimum(0.99, (1 + t) / (10 + t))
    ema = jax.tree.map(lambda e, p: decay * e + (1 - decay) * p, ema, params)
    return params, trace, ema

  params = (jnp.zeros((dim, 10)), jnp.zeros(10))
  trace, ema = jax.tree.map(jnp.zeros_like, params), params
  rng = np.random.default_rng(seed)
  key = jax.random.PRNGKey(int(rng.integers(2 ** 31)))
  capacity = int(batch + 6 * np.sqrt(batch))
  for t in range(steps):
    chosen = np.nonzero(rng.random(n) < batch / n)[0][:capacity]
    idx = np.zeros(capacity, np.int64)
    idx[:len(chosen)] = chosen
    mask = (np.arange(capacity) < len(chosen)).astype(np.float32)
    key, sub = jax.random.split(key)
    params, trace, ema = step(params, trace, ema, t, mask, x[idx[:, None], views[None]],
                              y[idx], sub)
  return ema


def accuracy(params, x, y):
  """On the image itself (view 0), as the platform evaluates."""
  hits = 0
  for i in range(0, len(x), 2000):
    xn = group_norm(jnp.asarray(x[i:i + 2000, 0].astype(np.float32)))
    hits += int(np.sum(np.asarray((xn @ params[0] + params[1]).argmax(-1)) == y[i:i + 2000]))
  return hits / len(x)


def main(mnist_dir, cache, views, sigma, seeds):
  x, y = view_features(mnist_dir, cache)
  order = np.random.default_rng(0).permutation(len(x))
  held_out, kept = order[:6000], order[6000:]  # the validation split
  for seed in [int(s) for s in seeds.split(',')]:
    t = time.time()
    params = train(x[kept], y[kept], VIEWS[views], float(sigma), seed)
    print(f'{views} sigma={sigma} seed={seed}: validation accuracy '
          f'{accuracy(params, x[held_out], y[held_out]):.4f} ({time.time() - t:.0f} s)',
          flush=True)


if __name__ == '__main__':
  main(*sys.argv[1:6])
