"""Top eigenvalue of the training-loss Hessian of a finished MNIST run's exported
parameters (power iteration with Hessian-vector products on the first EXAMPLES training
images), to place the model's stiffest direction on results/bandmf_curvature.py's
curvature axis (h = this eigenvalue for the mean cross-entropy, before clipping).

Privacy: it reads training images WITHOUT noise, so the number it prints is not covered
by the run's epsilon. Fine for public MNIST; on sensitive data keep it to yourself.

  python results/hessian_top_eigenvalue.py WORKDIR MNIST_IDX_DIR [EXAMPLES=1024]
"""
import os
import sys

import jax
from jax.flatten_util import ravel_pytree
import jax.numpy as jnp
import numpy as np

from image_classification.input import augmentation
from image_classification.data.readers import local_files
from image_classification.trained import inference


def main():
  workdir, data_dir = sys.argv[1], sys.argv[2]
  count = int(sys.argv[3]) if len(sys.argv) > 3 else 1024
  model = inference.load(workdir)
  images = local_files.read_idx(os.path.join(data_dir, 'train-images-idx3-ubyte.gz'),
                                2051)[:count, ..., None]
  labels = local_files.read_idx(os.path.join(data_dir, 'train-labels-idx1-ubyte.gz'),
                                2049)[:count].astype(np.int32)
  x = augmentation.standardise(jnp.asarray(images), model.card['mean'], model.card['std'])
  flat, unravel = ravel_pytree(model.params)

  def loss(f, x):
    logits = model.module.apply({'params': unravel(f)}, x, is_training=False)
    return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits),
                                         jnp.asarray(labels)[:, None], axis=1))

  # x is an argument, not a closed-over constant: XLA would spend minutes folding it.
  hvp = jax.jit(lambda v, x: jax.jvp(lambda f: jax.grad(loss)(f, x), (flat,), (v,))[1])
  v = jax.random.normal(jax.random.PRNGKey(0), flat.shape)
  v /= jnp.linalg.norm(v)
  for _ in range(50):
    w = hvp(v, x)
    eigenvalue = float(v @ w)
    v = w / jnp.linalg.norm(w)
  print(f'{workdir}: top Hessian eigenvalue {eigenvalue:.4g} '
        f'(mean loss {float(loss(flat, x)):.4f} on {count} training images)')


if __name__ == '__main__':
  main()
