"""Shared pieces of the end-to-end wiring tests: a tiny registered model with a block
of parameters that no loss depends on, synthetic datasets, a train-source wrapper that
records which indices the trainer draws, and an independent dp-accounting reference.

Everything here observes the real trainer (``loop.train``) from the outside: the data
source it reads from, the run files it writes and the checkpoint it leaves.
"""
import json
import os

import dp_accounting
from dp_accounting import pld
from dp_accounting import rdp
import flax.linen as nn
import jax.numpy as jnp
import numpy as np

from configs import base
from image_classification.data import base as data_base
from image_classification.models import registry
from image_classification.workdir import checkpoint_store

PROBE_MODEL = 'wiring_test_probe'


class ProbeModel(nn.Module):
  """A linear classifier on the flattened image plus ``probe``: a block of
  ``probe_size`` parameters, initialised to zero, that the loss never reads. Its
  gradient is identically zero, so after training it holds exactly the sum of the
  privatised noise the optimiser applied to it."""
  num_classes: int
  probe_size: int = 1
  bias0: float = 0.0   # initial bias of class 0 (the other biases and weights start at 0)

  @nn.compact
  def __call__(self, x, is_training: bool = False):
    del is_training
    self.param('probe', nn.initializers.zeros, (self.probe_size,))
    x = x.reshape(x.shape[:-3] + (-1,))
    bias0 = self.bias0

    def bias_init(key, shape, dtype=jnp.float32):
      del key
      return jnp.zeros(shape, dtype).at[0].set(bias0)

    return nn.Dense(self.num_classes, name='head', kernel_init=nn.initializers.zeros,
                    bias_init=bias_init)(x)


if PROBE_MODEL not in registry.available():
  registry.register(PROBE_MODEL)(
      lambda num_classes, **kwargs: ProbeModel(num_classes=num_classes, **kwargs))


class RecordingSource:
  """Wraps the training source the trainer is given and records every ``get``: the
  padded index arrays exactly as the trainer asked for them."""

  def __init__(self, source):
    self.source = source
    self.calls = []

  @property
  def num_examples(self):
    return self.source.num_examples

  @property
  def image_shape(self):
    return self.source.image_shape

  def get(self, indices, step=0):
    self.calls.append(np.array(indices, copy=True))
    return self.source.get(indices, step=step)


def random_splits(n_train, n_test=20, size=2, channels=1, num_classes=2, seed=0,
                  images=None, labels=None):
  rng = np.random.default_rng(seed)
  if images is None:
    images = rng.integers(0, 256, (n_train, size, size, channels), dtype=np.uint8)
  if labels is None:
    labels = rng.integers(0, num_classes, len(images)).astype(np.int32)
  test_x = rng.integers(0, 256, (n_test, size, size, channels), dtype=np.uint8)
  test_y = rng.integers(0, num_classes, n_test).astype(np.int32)
  train = RecordingSource(data_base.ArraySource(images, labels))
  return data_base.DatasetSplits(
      name='digits', train=train, test=data_base.ArraySource(test_x, test_y),
      num_classes=num_classes, mean=(0.5,), std=(0.5,))


def make_config(*, batch_size, steps, sigma, clip=1.0, lr=0.5, sampling='poisson',
                accountant='rdp', probe_size=1, per_example_grads='vmap', delta=1e-5,
                target_epsilon=1e4, log_every=1, **model_kwargs):
  config = base.get_config()
  config.data.name = 'digits'  # validated by name; the test passes its own arrays
  config.model.name = PROBE_MODEL
  config.model.kwargs.probe_size = probe_size
  for k, v in model_kwargs.items():
    config.model.kwargs[k] = v
  config.privacy.target_epsilon = target_epsilon
  config.privacy.delta = delta
  config.privacy.clipping_norm = clip
  config.privacy.sampling = sampling
  config.privacy.accountant = accountant
  if sigma == 0:
    config.privacy.allow_non_private = True
  config.privacy.noise_multiplier = float(sigma)
  config.training.batch_size = batch_size
  config.training.num_steps = steps
  config.training.optimizer.name = 'sgd'
  config.training.optimizer.learning_rate = lr
  config.training.optimizer.momentum = 0.0
  config.training.per_example_grads = per_example_grads
  config.training.log_every_steps = log_every
  config.training.eval_every_steps = 0
  config.training.eval_batch_size = 64
  config.wandb.mode = 'disabled'
  return config


def read_json(workdir, name):
  with open(os.path.join(workdir, name)) as f:
    return json.load(f)


def read_metrics(workdir):
  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    return [json.loads(line) for line in f]


def final_state(workdir):
  """The train state of the last checkpoint, as nested dicts of numpy arrays."""
  ckpts = checkpoint_store.Checkpoints(workdir)
  try:
    return ckpts.restore(ckpts.steps()[-1]).state
  finally:
    ckpts.close()


def drawn_indices(calls, realized):
  """Per step, the real indices the trainer drew: each step's chunks hold the real
  indices first and padding after (mask = first slots), ``realized`` says how many."""
  steps, i = [], 0
  for r in realized:
    got = []
    while True:
      chunk = calls[i]
      i += 1
      take = min(int(r) - len(got), len(chunk))
      got.extend(chunk[:take].tolist())
      if len(got) >= r:
        break
    steps.append(np.array(got, dtype=np.int64))
  assert i == len(calls), f'{len(calls) - i} get() calls left over'
  return steps


def reference_epsilon(*, sigma, n, b, steps, delta, sampling='poisson',
                      accountant='rdp', num_bands=1):
  """dp-accounting's epsilon for what a run did, built here from scratch (not through
  image_classification.privacy): Poisson <-> add/remove-one, Gaussian(sigma); fixed
  size <-> replace-one, sampling without replacement, Gaussian(sigma / 2). BandMF with
  b bands (cyclic Poisson, column-normalised strategy): ceil(steps / b) rounds of the
  Poisson-sampled Gaussian at rate b * B / N."""
  if num_bands > 1:
    steps, b = -(-steps // num_bands), b * num_bands
  if sampling == 'poisson':
    event = dp_accounting.PoissonSampledDpEvent(b / n, dp_accounting.GaussianDpEvent(sigma))
    relation = dp_accounting.NeighboringRelation.ADD_OR_REMOVE_ONE
  else:
    event = dp_accounting.SampledWithoutReplacementDpEvent(
        n, b, dp_accounting.GaussianDpEvent(sigma / 2))
    relation = dp_accounting.NeighboringRelation.REPLACE_ONE
  acc = (rdp.RdpAccountant(neighboring_relation=relation) if accountant == 'rdp'
         else pld.PLDAccountant(relation))
  acc.compose(dp_accounting.SelfComposedDpEvent(event, steps))
  return float(acc.get_epsilon(delta))
