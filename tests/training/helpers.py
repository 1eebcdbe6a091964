"""Shared tiny setup for training tests: a 6x6 problem and a small CNN."""
import jax
import numpy as np
import optax

from image_classification.models import registry
from image_classification.training import dp_step
from image_classification.training import mesh as mesh_lib


def tiny_batch(n=16, seed=0, size=6):
  rng = np.random.default_rng(seed)
  images = rng.integers(0, 256, (n, size, size, 1), dtype=np.uint8)
  labels = rng.integers(0, 3, n).astype(np.int32)
  return images, labels


def make_step(noise_multiplier=0.0, micro_batch_size=0, augmult=1, devices=None,
              expected_batch_size=8.0, clipping_norm=0.5, seed=0, random_flip=False):
  model = registry.build('cnn', 3, channels=(32,))
  params = model.init(jax.random.PRNGKey(seed), np.zeros((1, 6, 6, 1), np.float32))['params']
  optimizer = optax.sgd(1.0)  # params_new = params - privatised gradient
  cfg = dp_step.StepConfig(
      clipping_norm=clipping_norm, noise_multiplier=noise_multiplier,
      expected_batch_size=expected_batch_size, micro_batch_size=micro_batch_size,
      augmult=augmult, random_flip=random_flip, per_example_grads='vmap')
  mesh = mesh_lib.make_mesh(devices)
  step = dp_step.DPStep(model.apply, optimizer, cfg, mesh, jax.random.PRNGKey(seed + 1),
                        noise_key=jax.random.PRNGKey(seed + 2))
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
