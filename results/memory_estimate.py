"""The dry run's memory estimate (training/resources.py) against XLA's own memory
analysis of the compiled DP step: arguments + outputs + temporaries - aliased buffers
of the real jitted program for one micro-batch per device. Compiles each config once
(minutes for WRN-16-4 on a CPU); allocates nothing large.

  PYTHONPATH=. JAX_PLATFORMS=cpu python results/memory_estimate.py \
      "configs/quickstart.py@training.per_example_grads='fast'" ...

Each argument: a config file, then '@' and ';'-separated overrides (Python values).
"""
import sys
import time

import jax
import jax.numpy as jnp

from image_classification import api
from image_classification import optimizers
from image_classification.training import dp_step
from image_classification.privacy import mechanism_secret
from image_classification.training import experiment as experiment_lib
from image_classification.training import resources

MIB = 2.0 ** 20


def measure(path: str, overrides: dict) -> None:
  config = api.config(path, overrides)
  exp = experiment_lib.Experiment(config)
  plan = exp.plan
  est = resources.estimate(exp.model, exp.abstract_params, exp.image_shape, config, plan,
                           exp.devices, exp.per_example_grads)
  optimizer, _ = optimizers.make_optimizer(config.training, plan.steps)
  params = jax.tree_util.tree_map(lambda s: jnp.zeros(s.shape, s.dtype),
                                  exp.abstract_params)
  state = dp_step.init_state(params, optimizer, False, plan.privatizer())
  cfg = dp_step.step_config(config, clipping_norm=1.0,
                            expected_batch_size=plan.expected_batch_size,
                            mean=exp.data.mean, std=exp.data.std,
                            per_example_grads=exp.per_example_grads)
  # The keys of a secure run (their values do not matter here, their shapes do).
  keys = mechanism_secret.from_secret(bytes(mechanism_secret.SECRET_BYTES))
  step = dp_step.DPStep(exp.model.apply, optimizer, cfg, exp.mesh, keys.augment_key(),
                        noise_key=keys.noise_key(), privatizer=plan.privatizer())
  n = est.micro_batch * len(exp.devices)
  images = jnp.zeros((n,) + exp.image_shape, jnp.uint8)
  labels, mask = jnp.zeros((n,), jnp.int32), jnp.ones((n,), bool)
  start = time.time()
  m = step.step.lower(state, images, labels, mask, step.noise_key,
                      step.augment_key).compile(
      ).memory_analysis()
  xla = (m.argument_size_in_bytes + m.output_size_in_bytes + m.temp_size_in_bytes
         - m.alias_size_in_bytes)
  print(f'{path} {overrides}: estimate {est.total / MIB:.0f} MiB '
        f'({ {k: round(v / MIB, 1) for k, v in est.parts.items()} }); XLA: '
        f'{xla / MIB:.0f} MiB (temporaries {m.temp_size_in_bytes / MIB:.0f}); '
        f'estimate / XLA = {est.total / xla:.2f} (compiled in {time.time() - start:.0f} s '
        f'on {jax.devices()[0].platform})', flush=True)


def main(specs: list[str]) -> None:
  for spec in specs:
    path, _, rest = spec.partition('@')
    overrides = {'wandb.mode': 'disabled', 'training.num_steps': 10}
    for item in filter(None, rest.split(';')):
      key, value = item.split('=', 1)
      overrides[key] = eval(value)  # pylint: disable=eval-used  (a measurement script)
    measure(path, overrides)


if __name__ == '__main__':
  main(sys.argv[1:])
