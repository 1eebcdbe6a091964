"""What the 128-bit noise key costs: the noise of one step drawn with a secret's key
(Threefry-4x32-20, privacy/noise_generator.py) against the insecure seeded 64-bit key
(threefry2x32, one split key per leaf), for the parameter trees of real models.

  python results/noise_key_cost.py [--reps=15] [--models=cnn,wrn_16_4,wrn_28_10]

Times the jitted ``noise.add_noise(params, step_noise_key(key, step), 1.0)`` with the
key an argument (as in the DP step), after compilation, the two generators
interleaved rep by rep; prints the median milliseconds of each and their ratio, and
one JSON line. Results and the machine: results/noise_key_cost.md.
"""
import argparse
import json
import os
import platform
import time

import jax
import jax.numpy as jnp
import numpy as np

from image_classification.models import registry
from image_classification.privacy import mechanism_secret
from image_classification.privacy import noise

# name -> (registry name, kwargs, image shape, classes)
MODELS = {
    'cnn': ('cnn', {'channels': (16,), 'flatten': True, 'activation': 'tanh'},
            (8, 8, 1), 10),
    'wrn_16_4': ('wide_resnet', {'depth': 16, 'width': 4}, (32, 32, 3), 10),
    'wrn_28_10': ('wide_resnet', {'depth': 28, 'width': 10}, (32, 32, 3), 10),
}


def parameter_tree(name: str):
  model_name, kwargs, shape, classes = MODELS[name]
  model = registry.build(model_name, classes, **kwargs)
  abstract = jax.eval_shape(
      lambda k: model.init({'params': k, 'dropout': k}, jnp.zeros((1,) + shape),
                           is_training=False), jax.random.PRNGKey(0))['params']
  return jax.tree_util.tree_map(lambda s: jnp.zeros(s.shape, s.dtype), abstract)


def time_noise(params, raw_key, reps_out: list):
  fn = jax.jit(lambda p, k, s: noise.add_noise(p, noise.step_noise_key(k, s), 1.0))
  key = jnp.asarray(raw_key, jnp.uint32)
  jax.block_until_ready(fn(params, key, 0))  # compile

  def once(step):
    t0 = time.perf_counter()
    jax.block_until_ready(fn(params, key, step))
    reps_out.append(time.perf_counter() - t0)

  return once


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument('--reps', type=int, default=15)
  parser.add_argument('--models', default='cnn,wrn_16_4,wrn_28_10')
  args = parser.parse_args()
  secure = mechanism_secret.from_secret(bytes(range(32))).noise_key_words  # 4 words
  seeded = mechanism_secret.from_seed(0).noise_key_words                    # 2 words
  rows = []
  for name in args.models.split(','):
    params = parameter_tree(name)
    count = int(sum(np.prod(x.shape) for x in jax.tree_util.tree_leaves(params)))
    wide, narrow = [], []
    run_wide, run_narrow = time_noise(params, secure, wide), time_noise(params, seeded,
                                                                         narrow)
    for step in range(1, args.reps + 1):  # interleaved: the same load for both
      run_wide(step)
      run_narrow(step)
    row = {'model': name, 'num_params': count,
           'threefry4x32_ms': 1e3 * float(np.median(wide)),
           'threefry2x32_ms': 1e3 * float(np.median(narrow))}
    row['ratio'] = row['threefry4x32_ms'] / row['threefry2x32_ms']
    rows.append(row)
    print(f"{name} ({count:,} params): 128-bit key {row['threefry4x32_ms']:.1f} ms, "
          f"seeded 64-bit key {row['threefry2x32_ms']:.1f} ms, ratio "
          f"{row['ratio']:.2f}", flush=True)
  print(json.dumps({'device': str(jax.devices()[0]), 'backend': jax.default_backend(),
                    'cpus': os.cpu_count(), 'machine': platform.machine(),
                    'jax': jax.__version__, 'reps': args.reps,
                    'load_average': os.getloadavg(), 'rows': rows}))


if __name__ == '__main__':
  main()
