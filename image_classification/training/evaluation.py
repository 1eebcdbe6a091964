"""Accuracy on the evaluation split (public or held out: no privacy accounting)."""
import jax
import jax.numpy as jnp
import numpy as np

from image_classification.input import augmentation
from image_classification.reporting import progress
from image_classification.training import distributed
from image_classification.training import mesh as mesh_lib


def make_eval_fn(apply_fn, mean, std):
  @jax.jit
  def eval_batch(params, images, labels, mask):
    x = augmentation.standardise(images, mean, std)
    logits = apply_fn({'params': params}, x, is_training=False)
    correct = (jnp.argmax(logits, -1) == labels) & mask
    return jnp.sum(correct), jnp.sum(mask)

  return eval_batch


def evaluate(eval_fn, params, source, batch_size: int, mesh) -> float:
  """Fraction of ``source`` classified correctly (batches padded and masked)."""
  n = source.num_examples
  ndev = mesh.devices.size
  batch_size = int(np.ceil(min(batch_size, n) / ndev) * ndev)
  sharding = mesh_lib.batch_sharding(mesh)
  correct = total = 0
  starts = range(0, n, batch_size)
  for start in progress.iterate(starts, len(starts), 'evaluating'):
    # Padded to batch_size with masked slots (index 0); with several processes each
    # reads only the rows its devices hold (training/distributed.py).
    idx = np.zeros(batch_size, np.int64)
    real = np.arange(start, min(start + batch_size, n))
    idx[:len(real)] = real
    mask = np.arange(batch_size) < len(real)
    batch = distributed.global_batch(sharding, idx, mask, source.get)
    c, t = eval_fn(params, *batch)
    correct += int(c)
    total += int(t)
  return correct / max(total, 1)
