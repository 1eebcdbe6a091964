"""Throughput of the DP-SGD step against the same model's non-private step.

  python launch.py --config=configs/x.py --workdir=DIR --benchmark [--benchmark_*=...]
  python -m image_classification.tools.benchmark --config=configs/x.py --workdir=DIR [...]

``run_benchmark(config, workdir, batch_sizes, augmults)`` builds the config's model,
feeds random images of the dataset's published shape and class count (no dataset is
read; --benchmark_image_shape / --benchmark_num_classes where the files decide them),
and for every
(batch size, augmult) times, after compilation and warm-up:

  * the DP step: ``dp_step.DPStep.step``, the real one (per-example gradients ->
    clip -> sum -> Gaussian noise -> optimizer, one jitted call, state donated), with
    the config's per-example gradient implementation (or each of ``implementations``);
  * the non-private step: gradient of the mean loss over the same batch (the same K
    augmult views of each example), the same optimizer, jitted, state donated.

With several compute dtypes (``dtypes``, config.training.compute_dtype by default:
'float32' or 'bfloat16' convolutions and activations; parameters, clipping and noise
are float32 either way) each row records its ``compute_dtype``.

Images counted = examples x augmult. Each figure is the median over ``reps``
repetitions of ``steps_per_rep`` steps. It writes DIR/benchmark.json and prints a
table. Timings on a shared machine are noisy: the load average before and after is
recorded beside them.

Privacy: nothing here touches private data (the images are random), and the noise
multiplier only sets the scale of the noise, not the cost, so a placeholder is used
when the config leaves it to calibration. The noise reaches the step as in training,
through a privatizer (plan.timing_privatizer: the config's mechanism, DP-SGD's
Gaussian noise or BandMF's correlated noise with placeholder coefficients).
"""
import dataclasses
import json
import os
import platform
import resource
import statistics
import time
from typing import Any, Optional, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from image_classification import config as config_lib
from image_classification import optimizers
from image_classification import plan as plan_lib
from image_classification.workdir import run_files
from image_classification.data import base as data_base
from image_classification.data import catalog
from image_classification.data import datasets
from image_classification.models import registry
from image_classification.models import features
from image_classification.privacy import clipped_sums
from image_classification.privacy import mechanism_secret
from image_classification.privacy import noise
from image_classification.training import dp_step
from image_classification.training import mesh as mesh_lib
from image_classification.tools import command_line


def _input_spec(config: ml_collections.ConfigDict,
                image_shape: Optional[Sequence[int]] = None,
                num_classes: Optional[int] = None):
  """(image shape, num classes, mean, std) from the dataset's published facts
  (data/datasets.py, data/catalog.py), as a dry run has them; no data is read.

  ``image_shape`` / ``num_classes`` (--benchmark_image_shape, --benchmark_num_classes)
  replace them, and are needed where the files decide (image_folder, npz).
  """
  name = config.data.name
  spec = datasets.get(name)  # DataError for an unknown name
  shape = tuple(image_shape or ())
  if not shape:
    try:
      shape = tuple(catalog.image_shape(name, config.data.image_size or 0))
    except data_base.DataError as e:
      raise config_lib.ConfigError(
          f'config.data.name={name!r}: the benchmark times random images of the '
          f"dataset's published shape and reads no data ({e}); give "
          '--benchmark_image_shape=H,W,C') from None
  num_classes = num_classes or spec.num_classes
  if not num_classes:
    raise config_lib.ConfigError(
        f'config.data.name={name!r} has no published number of classes (the files '
        'decide) and the benchmark reads no data: give --benchmark_num_classes=N')
  mean, std = spec.normalisation(shape[-1])
  if config.model.features:  # the model is timed on the features it sees
    extractor = features.build(config.model.features, shape,
                               **config.model.features_kwargs.to_dict())
    shape = tuple(extractor.output_shape)
    mean = (features.PASS_THROUGH_MEAN,) * shape[-1]
    std = (features.PASS_THROUGH_STD,) * shape[-1]
  return shape, int(num_classes), tuple(mean), tuple(std)


def _peak_memory(devices) -> tuple[Optional[int], str]:
  """(bytes, what the number is)."""
  stats = None
  try:
    stats = devices[0].memory_stats()
  except Exception:  # pylint: disable=broad-except
    stats = None
  if stats and 'peak_bytes_in_use' in stats:
    return int(stats['peak_bytes_in_use']), 'device peak_bytes_in_use (memory_stats)'
  rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
  return int(rss) * 1024, ('process peak RSS (ru_maxrss): host memory, cumulative '
                           'over the process, so it includes earlier rows and '
                           'compilation')


def _compiled_bytes(compiled) -> Optional[int]:
  """XLA's own estimate of the executable's memory (arguments + outputs + temps)."""
  try:
    m = compiled.memory_analysis()
    return int(m.argument_size_in_bytes + m.output_size_in_bytes +
               m.temp_size_in_bytes - m.alias_size_in_bytes)
  except Exception:  # pylint: disable=broad-except
    return None


def _time_steps(run_once, state, reps: int, warmup: int, min_rep_seconds: float):
  """Median seconds per step; ``run_once(state) -> state`` (the state is donated)."""
  for _ in range(warmup):
    state = jax.block_until_ready(run_once(state))
  t0 = time.perf_counter()
  state = jax.block_until_ready(run_once(state))
  estimate = time.perf_counter() - t0
  steps = max(1, int(np.ceil(min_rep_seconds / max(estimate, 1e-9))))
  times, cpu = [], []
  for _ in range(reps):
    t0, c0 = time.perf_counter(), time.process_time()
    for _ in range(steps):
      state = run_once(state)
    jax.block_until_ready(state)
    times.append((time.perf_counter() - t0) / steps)
    cpu.append((time.process_time() - c0) / steps)
  return state, statistics.median(times), times, statistics.median(cpu), steps


def _nonprivate_step(apply_fn, optimizer, cfg: dp_step.StepConfig):
  """Mean-loss gradient over the batch's B x K views + optimizer; no clipping, no
  noise (the same augmentation as the DP step, one key per example)."""

  def step(state, images, labels, keys):
    aug_keys = jax.vmap(lambda k: jax.random.split(k)[0])(keys)
    views = dp_step.example_views(cfg, aug_keys, images)
    flat = views.reshape((-1,) + views.shape[2:])
    flat_labels = jnp.repeat(labels, views.shape[1])

    def loss_fn(params):
      logits = apply_fn({'params': params}, flat, is_training=True,
                        rngs={'dropout': keys[0]})
      return jnp.mean(dp_step.cross_entropy(logits, flat_labels))

    grads = jax.grad(loss_fn)(state.params)
    updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
    return state.replace(step=state.step + 1,
                         params=optax.apply_updates(state.params, updates),
                         opt_state=opt_state)

  return jax.jit(step, donate_argnums=(0,))


def _micro_batch_size(batch: int, num_devices: int, micro: int) -> int:
  """The DP step's micro-batch size (per device) for ``batch`` examples per step.

  A batch that fits in one micro-batch is one pass (0); a larger one must split
  evenly. Raises ConfigError naming the flag and the field, before anything compiles.
  """
  if batch % num_devices:
    raise config_lib.ConfigError(
        f'--benchmark_batch_sizes: {batch} does not split over the {num_devices} '
        f'devices; use a multiple of {num_devices}')
  per_device = batch // num_devices
  if not micro or micro >= per_device:
    return 0
  if per_device % micro:
    raise config_lib.ConfigError(
        f'--benchmark_batch_sizes: {batch} is {per_device} examples per device, not a '
        f'multiple of config.training.micro_batch_size={micro}; use a multiple of '
        f'{micro * num_devices} or override --config.training.micro_batch_size')
  return micro


def _flag_error(flag: str, value, why: str):
  raise config_lib.ConfigError(f'--{flag}={value}: {why}')


def parse_flags(batch_sizes: Sequence[str], augmults: Sequence[str],
                implementations: Optional[Sequence[str]] = None
                ) -> tuple[list[int], list[int], Optional[tuple[str, ...]]]:
  """The --benchmark_* flags as values; a bad entry is named before anything runs.

  Raises:
    ConfigError: an empty list, an entry that is not a positive integer, or an
      unknown per-example gradient implementation.
  """
  def positive_ints(flag, values):
    values = list(values or [])
    text = ','.join(str(v) for v in values)
    if not values or any(str(v).strip() == '' for v in values):
      _flag_error(flag, text, 'give a comma-separated list of positive integers, '
                  'e.g. 64,256')
    out = []
    for v in values:
      try:
        n = int(str(v).strip())
      except ValueError:
        _flag_error(flag, text, f'{v!r} is not an integer; give positive integers, '
                    'e.g. 64,256')
      if n <= 0:
        _flag_error(flag, text, f'{n} is not positive; give positive integers')
      out.append(n)
    return out

  sizes = positive_ints('benchmark_batch_sizes', batch_sizes)
  ks = positive_ints('benchmark_augmults', augmults)
  impls = None
  if implementations is not None:
    impls = tuple(str(i).strip() for i in implementations)
    _check_implementations(impls)
  return sizes, ks, impls


def parse_dtypes(dtypes: Optional[Sequence[str]]) -> Optional[tuple[str, ...]]:
  """--benchmark_dtypes as a tuple (None: the config's compute_dtype).

  Raises:
    ConfigError: an empty list or an unknown dtype, naming the flag and the choices.
  """
  if dtypes is None:
    return None
  values = tuple(str(d).strip() for d in dtypes)
  _check_dtypes(values)
  return values


def _check_choices(flag: str, values: Sequence[str], choices: Sequence[str],
                   config_field: str) -> None:
  """Refuses an empty list, an empty entry or an unknown value of a --benchmark_* flag."""
  text = ','.join(values)
  if not values or any(not v for v in values):
    _flag_error(flag, text,
                f'give at least one of {list(choices)}, or leave the flag out to time '
                f'config.{config_field}')
  unknown = [v for v in values if v not in choices]
  if unknown:
    _flag_error(flag, text, f'unknown {unknown}; choose from {list(choices)}')


def _check_dtypes(dtypes: Sequence[str]) -> None:
  _check_choices('benchmark_dtypes', dtypes, registry.COMPUTE_DTYPES,
                 'training.compute_dtype')


def _check_implementations(implementations: Sequence[str]) -> None:
  _check_choices('benchmark_implementations', implementations,
                 clipped_sums.names(), 'training.per_example_grads')


@dataclasses.dataclass
class _Setup:
  """What every row shares: the devices, the input's shape, the models (one per
  compute dtype), the optimizer, the initial parameters and the noise."""
  devices: list
  mesh: Any
  shape: tuple
  num_classes: int
  mean: tuple
  std: tuple
  models: dict
  optimizer: Any
  base_key: Any
  noise_key: np.ndarray
  augment_key: np.ndarray
  params: Any
  privatizer: Any
  clipping_norm: float
  noise_multiplier: float
  feature_views: int = 1  # fixed views of features per example (features_shift)

  def fresh_state(self):  # each step donates its state, so every timing gets a copy
    copy = jax.tree_util.tree_map(jnp.copy, self.params)
    return jax.device_put(
        dp_step.init_state(copy, self.optimizer, False, self.privatizer),
        mesh_lib.replicated(self.mesh))


def _build(config: ml_collections.ConfigDict, dtypes: Sequence[str],
           image_shape=None, num_classes=None) -> _Setup:
  """The models, the optimizer, the parameters and the noise; a bad model kwarg is a
  ConfigError before anything compiles."""
  devices = jax.devices()
  shape, num_classes, mean, std = _input_spec(config, image_shape, num_classes)
  try:
    models = {d: registry.build(config.model.name, num_classes, compute_dtype=d,
                                **config.model.kwargs.to_dict()) for d in dtypes}
    model = models[dtypes[0]]
    jax.eval_shape(model.init, {'params': jax.random.PRNGKey(0),
                                'dropout': jax.random.PRNGKey(0)},
                   jnp.zeros((1,) + shape, jnp.float32))
  except (TypeError, ValueError) as e:  # a bad model kwarg, before anything compiles
    raise config_lib.ConfigError(
        f'config.model.kwargs={config.model.kwargs.to_dict()} do not build model '
        f'{config.model.name!r} for images {shape}: {e}') from e
  t = config.training
  optimizer, _ = optimizers.make_optimizer(t, max(int(t.num_steps or 0), 1000))
  base_key = jax.random.PRNGKey(config.seed)
  # The generators a run of this config draws its noise and augmentation keys from
  # (privacy/noise.py, training/dp_step.py): the 128-bit keys of a secret, or the seeded
  # 64-bit keys of the testing switch. The keys themselves are public here: a benchmark
  # on random data releases nothing private.
  randomness = (mechanism_secret.from_seed(config.seed) if plan_lib.seeded_noise(config)
                else mechanism_secret.from_secret(bytes(mechanism_secret.SECRET_BYTES)))
  # The noise as a run adds it, through the privatizer (the one route of sigma to the
  # step); its scale does not change the cost.
  clipping_norm, noise_multiplier = plan_lib.timing_parameters(config)
  # Float32 parameters, the same for every compute dtype (the dtype is not a parameter).
  params = jax.jit(model.init)(
      {'params': base_key, 'dropout': base_key},
      jnp.zeros((1,) + shape, jnp.float32))['params']
  return _Setup(devices, mesh_lib.make_mesh(devices), shape, num_classes, mean, std,
                models, optimizer, base_key, randomness.noise_key(),
                randomness.augment_key(), params,
                plan_lib.timing_privatizer(config), clipping_norm, noise_multiplier,
                features.num_views(config))


def _time_nonprivate(setup: _Setup, model, cfg, batch, reps, warmup, min_rep_seconds):
  """The non-private step on ``batch`` = (images, labels, mask, keys)."""
  images, labels, _, keys = batch
  state = setup.fresh_state()
  jitted = _nonprivate_step(model.apply, setup.optimizer, cfg)
  t0 = time.perf_counter()
  compiled = jitted.lower(state, images, labels, keys).compile()
  compile_s = time.perf_counter() - t0
  state, sec, times, cpu, _ = _time_steps(
      lambda s: compiled(s, images, labels, keys), state, reps, warmup, min_rep_seconds)
  del state
  return dict(sec=sec, times=times, cpu=cpu, compile_s=compile_s,
              compiled_bytes=_compiled_bytes(compiled))


def _time_dp(setup: _Setup, model, cfg, batch, reps, warmup, min_rep_seconds):
  """The real DP step (dp_step.DPStep.step) on ``batch``; the row's DP fields."""
  images, labels, mask, _ = batch
  # Random data and fixed public keys: a benchmark releases nothing private.
  step = dp_step.DPStep(model.apply, setup.optimizer, cfg, setup.mesh, setup.augment_key,
                        noise_key=setup.noise_key, privatizer=setup.privatizer)
  state = setup.fresh_state()
  t0 = time.perf_counter()
  compiled = step.step.lower(state, images, labels, mask, step.noise_key,
                             step.augment_key).compile()
  compile_s = time.perf_counter() - t0
  state, sec, times, cpu, steps = _time_steps(
      lambda s: compiled(s, images, labels, mask, step.noise_key, step.augment_key)[0],
      state,
      reps, warmup, min_rep_seconds)
  del state
  peak, peak_source = _peak_memory(setup.devices)
  return {'dp_step_sec': sec, 'dp_step_sec_reps': [round(x, 4) for x in times],
          'dp_cpu_sec_per_step': cpu, 'dp_compile_sec': compile_s,
          'dp_compiled_bytes': _compiled_bytes(compiled), 'steps_per_rep': steps,
          'peak_memory_bytes': peak, 'peak_memory_source': peak_source}


def _nonprivate_fields(images_per_step: int, dp_sec: float, nonprivate: dict) -> dict:
  return {
      'nonprivate_images_per_sec': images_per_step / nonprivate['sec'],
      'nonprivate_step_sec': nonprivate['sec'],
      'nonprivate_step_sec_reps': [round(x, 4) for x in nonprivate['times']],
      'nonprivate_cpu_sec_per_step': nonprivate['cpu'],
      'nonprivate_compile_sec': nonprivate['compile_s'],
      'nonprivate_compiled_bytes': nonprivate['compiled_bytes'],
      'dp_over_nonprivate_time': dp_sec / nonprivate['sec'],
  }


def _random_batch(setup: _Setup, batch: int, augmult: int):
  """(images, labels, mask, keys of the non-private step), sharded over the devices."""
  rng = np.random.default_rng(batch * 1000 + augmult)
  # Fixed views of features (config.model.features_shift) are stored side by side
  # on the channel axis, as the trainer holds them.
  stored = setup.shape[:-1] + (setup.shape[-1] * setup.feature_views,)
  images = rng.integers(0, 256, (batch,) + stored, dtype=np.uint8)
  labels = rng.integers(0, setup.num_classes, batch).astype(np.int32)
  mask = np.ones(batch, bool)
  keys = jax.random.split(setup.base_key, batch)
  return jax.device_put((images, labels, mask, keys),
                        mesh_lib.batch_sharding(setup.mesh))


def _time_rows(config, setup: _Setup, batch_sizes, augmults, implementations, dtypes,
               micro_batch_sizes, timing: dict, include_nonprivate: bool):
  """Times every (augmult, batch, dtype, implementation); returns (rows, the error
  that stopped it or None): the rows measured are kept."""
  rows = []
  try:
    for augmult in augmults:
      for batch in batch_sizes:
        data = _random_batch(setup, batch, augmult)
        images_per_step = batch * augmult * setup.feature_views
        # The configured step at this batch size and augmult; each timed
        # implementation replaces per_example_grads. The non-private step reads only
        # the augmentation fields.
        cfg = dp_step.step_config(
            config, clipping_norm=setup.clipping_norm, expected_batch_size=float(batch),
            mean=setup.mean, std=setup.std, micro_batch_size=micro_batch_sizes[batch],
            augmult=augmult)
        for dtype in dtypes:
          model = setup.models[dtype]
          nonprivate = (_time_nonprivate(setup, model, cfg, data, **timing)
                        if include_nonprivate else None)
          for impl in implementations:
            dp = _time_dp(setup, model, dataclasses.replace(cfg, per_example_grads=impl),
                          data, **timing)
            row = {'batch_size': batch, 'augmult': augmult, 'per_example_grads': impl,
                   'compute_dtype': dtype, 'micro_batch_size': micro_batch_sizes[batch],
                   'images_per_step': images_per_step,
                   'dp_images_per_sec': images_per_step / dp['dp_step_sec'], **dp}
            if nonprivate:
              row.update(_nonprivate_fields(images_per_step, dp['dp_step_sec'],
                                            nonprivate))
            rows.append(row)
            print(_format_row(row), flush=True)
  except (Exception, KeyboardInterrupt) as e:  # pylint: disable=broad-except
    return rows, e  # keep what was measured; the caller re-raises
  return rows, None


def run_benchmark(config: ml_collections.ConfigDict, workdir: str,
                  batch_sizes: Sequence[int], augmults: Sequence[int],
                  implementations: Optional[Sequence[str]] = None, reps: int = 5,
                  warmup: int = 2, min_rep_seconds: float = 0.0,
                  include_nonprivate: bool = True,
                  dtypes: Optional[Sequence[str]] = None,
                  image_shape: Optional[Sequence[int]] = None,
                  num_classes: Optional[int] = None) -> dict[str, Any]:
  """Times the DP and the non-private step; writes WORKDIR/benchmark.json.

  Args:
    config: an experiment config (model, optimizer, clipping norm, micro-batch size,
      augmentation and per-example gradient implementation are taken from it).
    workdir: where benchmark.json goes (created if missing).
    batch_sizes: examples per step (the expected batch size and the static batch;
      all slots are real examples). Must split evenly over the devices and, when
      larger than config.training.micro_batch_size per device, into micro-batches
      (a smaller batch is one pass).
    augmults: augmentation multiplicities K to time.
    implementations: clipped-sum implementations to time (``clipped_sums.names()``);
      default: the config's (config.training.per_example_grads).
    reps: timed repetitions; the figures are medians.
    warmup: untimed steps after compilation.
    min_rep_seconds: each repetition runs enough steps to last about this long.
    include_nonprivate: also time the non-private step.
    dtypes: compute dtypes to time ('float32', 'bfloat16'); default: the config's
      config.training.compute_dtype. The non-private step uses the same dtype.
    image_shape, num_classes: the input's, instead of the dataset's published ones
      (needed where the files decide them: image_folder, npz).

  Returns:
    The content of benchmark.json. If a step fails after some rows were timed,
    benchmark.json still holds those rows (with 'error' saying what stopped it) and
    the error is raised.
  """
  # Bad arguments fail here, before anything is built or timed.
  parse_flags([str(b) for b in batch_sizes], [str(k) for k in augmults])
  if implementations is not None:
    _check_implementations(tuple(implementations))
  t = config.training
  dtypes = tuple(dtypes or (t.compute_dtype or 'float32',))
  _check_dtypes(dtypes)
  setup = _build(config, dtypes, image_shape, num_classes)
  implementations = tuple(implementations or (t.per_example_grads,))
  micro_batch_sizes = {b: _micro_batch_size(b, len(setup.devices),
                                            int(t.micro_batch_size or 0))
                       for b in batch_sizes}  # bad sizes fail here, before compiling
  load_before = os.getloadavg()
  rows, error = _time_rows(
      config, setup, batch_sizes, augmults, implementations, dtypes, micro_batch_sizes,
      dict(reps=reps, warmup=warmup, min_rep_seconds=min_rep_seconds),
      include_nonprivate)
  result = {
      'device': mesh_lib.describe(setup.devices),
      'backend': jax.default_backend(),
      'host': {'cpus': os.cpu_count(), 'machine': platform.machine(),
               'processor': platform.processor() or None},
      'xla_flags': os.environ.get('XLA_FLAGS', ''),
      'model': config.model.name,
      'model_kwargs': config.model.kwargs.to_dict(),
      'compute_dtypes': list(dtypes),
      'num_params': int(sum(np.prod(x.shape)
                            for x in jax.tree_util.tree_leaves(setup.params))),
      'image_shape': list(setup.shape),
      'num_classes': setup.num_classes,
      'optimizer': t.optimizer.name,
      'clipping_norm': setup.clipping_norm,
      'noise_multiplier': float(setup.noise_multiplier),
      'micro_batch_size': int(t.micro_batch_size or 0),
      'noise_generator': noise.generator(len(setup.noise_key)),
      'mechanism': _mechanism(setup.privatizer),
      # > 1: each example is this many stored fixed views (config.model.features_shift)
      'feature_views': setup.feature_views,
      'jax_version': jax.__version__,
      'reps': reps, 'warmup_steps': warmup,
      'timing': 'median over reps of wall-clock seconds per step, after compilation '
                'and warm-up; images = examples x augmult',
      'load_average_before': list(load_before),
      'load_average_after': list(os.getloadavg()),
      'rows': rows,
  }
  _write(result, workdir, error)
  return result


def _write(result: dict, workdir: str, error: Optional[BaseException]) -> None:
  """benchmark.json and the table; then re-raises what stopped the rows."""
  rows = result['rows']
  if error is not None:
    result['error'] = (f'stopped after {len(rows)} row(s): {type(error).__name__}: '
                       f'{error}')
  os.makedirs(workdir, exist_ok=True)
  with open(os.path.join(workdir, run_files.BENCHMARK), 'w') as f:
    json.dump(result, f, indent=2)
  if rows:
    print(format_table(result), flush=True)
  if error is not None:
    print(f'benchmark stopped after {len(rows)} row(s); those are in '
          f'{os.path.join(workdir, run_files.BENCHMARK)}', flush=True)
    raise error


def parse_shape(values: Optional[Sequence[str]]) -> Optional[tuple[int, int, int]]:
  """--benchmark_image_shape as (H, W, C) (None: the dataset's published shape)."""
  if values is None:
    return None
  text = ','.join(str(v) for v in values)
  try:
    shape = tuple(int(str(v).strip()) for v in values)
  except ValueError:
    shape = ()
  if len(shape) != 3 or min(shape) <= 0 or shape[-1] not in (1, 3):
    _flag_error('benchmark_image_shape', text, 'give height,width,channels (1 or 3), '
                'e.g. 224,224,3')
  return shape


def run_from_flags(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """The command (launch.py --benchmark, python -m image_classification.tools.benchmark):
  the --benchmark_* flags (tools/command_line.py), checked, then ``run_benchmark``."""
  batch_sizes, augmults, implementations = parse_flags(
      command_line.BATCH_SIZES.value, command_line.AUGMULTS.value,
      command_line.IMPLEMENTATIONS.value)
  num_classes = command_line.NUM_CLASSES.value
  if num_classes is not None and num_classes < 1:
    _flag_error('benchmark_num_classes', num_classes, 'give a positive number')
  return run_benchmark(  # prints the table and writes benchmark.json
      config, workdir, batch_sizes=batch_sizes, augmults=augmults,
      implementations=implementations,
      dtypes=parse_dtypes(command_line.DTYPES.value),
      image_shape=parse_shape(command_line.IMAGE_SHAPE.value), num_classes=num_classes)


def _format_row(row: dict) -> str:
  nonprivate = row.get('nonprivate_images_per_sec')
  return (f"B={row['batch_size']} K={row['augmult']} {row['per_example_grads']} "
          f"{row.get('compute_dtype', 'float32')}: "
          f"DP {row['dp_images_per_sec']:.1f} img/s" +
          (f", non-private {nonprivate:.1f} img/s, DP/non-private time "
           f"{row['dp_over_nonprivate_time']:.2f}" if nonprivate else ''))


def _mechanism(privatizer) -> str:
  """'dp-sgd' or 'bandmf (b = 3 bands)': which noise the timed step adds."""
  bands = getattr(privatizer, 'num_bands', 1)
  return f'bandmf (b = {bands} bands)' if bands > 1 else 'dp-sgd'


def format_table(result: dict) -> str:
  """The rows as a markdown table."""
  lines = [
      f"{result['model']} ({result['num_params']:,} params) on {result['device']}, "
      f"jax {result['jax_version']}"
      + (f", noise from {result['noise_generator']}" if result.get('noise_generator')
         else '')
      + (f", mechanism {result['mechanism']}" if result.get('mechanism') else ''),
      '| batch | augmult | per-example grads | compute dtype | DP img/s | '
      'non-private img/s | DP/non-private time | peak memory MiB | '
      'XLA buffers MiB (DP / non-private) |',
      '|---|---|---|---|---|---|---|---|---|',
  ]

  def mib(x):
    return '-' if x is None else f'{x / 2**20:.0f}'

  for r in result['rows']:
    nonprivate = r.get('nonprivate_images_per_sec')
    ratio = r.get('dp_over_nonprivate_time')
    lines.append(
        f"| {r['batch_size']} | {r['augmult']} | {r['per_example_grads']} | "
        f"{r.get('compute_dtype', 'float32')} | {r['dp_images_per_sec']:.1f} | "
        f"{'-' if nonprivate is None else f'{nonprivate:.1f}'} | "
        f"{'-' if ratio is None else f'{ratio:.2f}'} | "
        f"{mib(r['peak_memory_bytes'])} | {mib(r.get('dp_compiled_bytes'))} / "
        f"{mib(r.get('nonprivate_compiled_bytes'))} |")
  lines.append(f"peak memory: {result['rows'][0]['peak_memory_source']}; XLA buffers: "
               'arguments + outputs + temporaries of the compiled step'
               if result['rows'] else '')
  return '\n'.join(lines)


if __name__ == '__main__':
  command_line.tool_main('benchmark', run_from_flags)
