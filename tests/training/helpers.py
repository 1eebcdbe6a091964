"""Shared tiny setup for training tests: a 6x6 problem and a small CNN, a TrainState
and a privacy plan for checkpoint and resume tests."""
import jax
import jax.numpy as jnp
import numpy as np
import optax

from image_classification import plan as plan_lib
from image_classification.models import registry
from image_classification.privacy import privatizers
from image_classification.training import dp_step
from image_classification.training import mesh as mesh_lib


def tiny_batch(n=16, seed=0, size=6):
  rng = np.random.default_rng(seed)
  images = rng.integers(0, 256, (n, size, size, 1), dtype=np.uint8)
  labels = rng.integers(0, 3, n).astype(np.int32)
  return images, labels


def make_step(noise_multiplier=0.0, micro_batch_size=0, augmult=1, devices=None,
              expected_batch_size=8.0, clipping_norm=0.5, seed=0, random_flip=False,
              noise_key=None, feature_views=1):
  """A DPStep of a small CNN; ``noise_key``: raw uint32 words (default: the seeded
  two-word key PRNGKey(seed + 2))."""
  model = registry.build('cnn', 3, channels=(32,))
  params = model.init(jax.random.PRNGKey(seed), np.zeros((1, 6, 6, 1), np.float32))['params']
  optimizer = optax.sgd(1.0)  # params_new = params - privatised gradient
  cfg = dp_step.StepConfig(
      clipping_norm=clipping_norm, expected_batch_size=expected_batch_size, micro_batch_size=micro_batch_size,
      augmult=augmult, random_flip=random_flip, per_example_grads='vmap',
      feature_views=feature_views)
  mesh = mesh_lib.make_mesh(devices)
  step = dp_step.DPStep(model.apply, optimizer, cfg, mesh, jax.random.PRNGKey(seed + 1),
                        noise_key=(jax.random.PRNGKey(seed + 2) if noise_key is None
                                   else noise_key),
                        privatizer=privatizers.GaussianPrivatizer(
                            noise_multiplier * clipping_norm))
  state = jax.device_put(dp_step.init_state(params, optimizer, False),
                         mesh_lib.replicated(mesh))
  return step, state, mesh


def privatised_gradient(step, state, images, labels, mask):
  """Runs one step and returns (gradient that was applied, stats)."""
  before = jax.device_get(state.params)
  sharding = mesh_lib.batch_sharding(step.mesh)
  new_state, stats = step.run(state, [jax.device_put((images, labels, mask), sharding)])
  after = jax.device_get(new_state.params)
  return jax.tree_util.tree_map(lambda a, b: a - b, before, after), jax.device_get(stats)


def train_state(step, seed=0):
  """A TrainState at ``step`` whose momentum trace and EMA are non-zero."""
  rng = np.random.default_rng(seed)
  params = {'conv0': {'kernel': jnp.asarray(rng.normal(size=(3, 3, 1, 4)), jnp.float32),
                      'bias': jnp.zeros((4,))},
            'head': {'kernel': jnp.asarray(rng.normal(size=(4, 3)), jnp.float32)}}
  optimizer = optax.sgd(0.1, momentum=0.9)
  state = dp_step.init_state(params, optimizer, train_only_head=False)
  grads = jax.tree_util.tree_map(lambda p: p + 1.0, params)
  updates, opt_state = optimizer.update(grads, state.opt_state, params)
  params = optax.apply_updates(params, updates)
  return state.replace(step=jnp.asarray(step, jnp.int32), params=params,
                       opt_state=opt_state,
                       ema_params=jax.tree_util.tree_map(lambda p: 0.5 * p, params))


def privacy_plan(noise_multiplier=1.5, steps=12):
  """A DP-SGD plan for the digits' 1437 training examples (nothing is calibrated)."""
  return plan_lib.PrivacyPlan(
      noise_multiplier=noise_multiplier, clipping_norm=1.0, sampling='poisson',
      sampling_rate=64 / 1437, expected_batch_size=64, steps=steps, delta=1e-5,
      epsilon=1.0, target_epsilon=4.0, accountant='rdp',
      neighboring_relation='add_or_remove_one', dataset_size=1437)
