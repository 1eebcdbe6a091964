"""The process's flags: XLA devices on the CPU, multi-process jobs, the compilation
cache. ``start()`` applies them before a command runs; --host_devices must take effect
before jax is imported, so nothing of JAX is imported at the top of this module.
"""
import os
import sys

from absl import app
from absl import flags

from image_classification import command_line

HOST_DEVICES = flags.DEFINE_integer(
    'host_devices', None, 'On the CPU: split the host into this many XLA devices (e.g. '
    'its number of cores); the trainer then shards every batch over them with shard_map. '
    'XLA:CPU runs each convolution on one core, so on 2 cores 2 devices train a '
    'WRN-16-4 about 1.3x faster (results/benchmarks.md). Unset keeps JAX\'s '
    'default. The batch size must split over the devices.', lower_bound=1)
COORDINATOR_ADDRESS = flags.DEFINE_string(
    'coordinator_address', None, 'Multi-process training: HOST:PORT of process 0, which '
    'runs the jax.distributed coordinator; with --num_processes and --process_id. '
    'Every process runs the same command (same --config, overrides and --workdir on a '
    'shared file system); process 0 alone writes the run files and prints.')
NUM_PROCESSES = flags.DEFINE_integer(
    'num_processes', None, 'Multi-process training: how many processes the job has.')
PROCESS_ID = flags.DEFINE_integer(
    'process_id', None, 'Multi-process training: this process\'s index, 0..N-1.')
DISTRIBUTED = flags.DEFINE_bool(
    'distributed', False, 'Multi-process training with the cluster detected by '
    'jax.distributed.initialize() (SLURM, Kubernetes / GKE, Cloud TPU).')
DISTRIBUTED_TIMEOUT = flags.DEFINE_float(
    'distributed_timeout', 120.0, 'Multi-process training: seconds to wait for every '
    'process to join, and for a silent process to be declared dead during the run; '
    'then the others stop with a message (re-running the same command resumes).')
COMPILATION_CACHE_DIR = flags.DEFINE_string(
    'compilation_cache_dir', None,
    "JAX's persistent compilation cache, so that a resumed run, a sweep's later points "
    'and a second benchmark reuse compiled steps instead of compiling again. Default: '
    '$JAX_COMPILATION_CACHE_DIR if set, else $XDG_CACHE_HOME (or ~/.cache)/'
    "dp-image-classification/jax; 'none' turns it off. It holds compiled programs "
    'only: the secret noise key is an argument of the step, never compiled in. Programs '
    'that compiled in under 0.5 s are not cached unless '
    '$JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS sets another threshold.')


def split_host_into_devices(count: int | None) -> None:
  """Sets XLA_FLAGS so that the CPU backend shows ``count`` devices (before jax loads)."""
  if count is None:
    return
  xla_flags = os.environ.get('XLA_FLAGS', '')
  if 'xla_force_host_platform_device_count' in xla_flags:
    raise app.UsageError(f'--host_devices={count} and XLA_FLAGS={xla_flags!r} both set '
                         'the CPU device count; keep one of them')
  if 'jax' in sys.modules:
    raise app.UsageError('--host_devices must take effect before jax is imported')
  os.environ['XLA_FLAGS'] = (
      f'{xla_flags} --xla_force_host_platform_device_count={count}'.strip())


def compilation_cache_dir(flag_value) -> str | None:
  """The cache folder to use (None: off). An explicit flag wins over the environment."""
  if flag_value is not None:
    return None if flag_value.lower() in ('', 'none', 'off') else flag_value
  if os.environ.get('JAX_COMPILATION_CACHE_DIR'):
    return os.environ['JAX_COMPILATION_CACHE_DIR']
  base = os.environ.get('XDG_CACHE_HOME') or os.path.join(os.path.expanduser('~'), '.cache')
  return os.path.join(base, 'dp-image-classification', 'jax')


def enable_compilation_cache(path) -> None:
  import jax  # pylint: disable=g-import-not-at-top
  if path is None:
    jax.config.update('jax_enable_compilation_cache', False)
    return
  try:
    os.makedirs(path, exist_ok=True)
  except OSError as e:
    raise app.UsageError(f'--compilation_cache_dir={path}: cannot create it ({e}); give a '
                         "writable folder or 'none'") from e
  jax.config.update('jax_compilation_cache_dir', path)
  # Cache every program that took a noticeable time to compile (the DP step, the
  # evaluation step), not the many tiny ones, unless the environment sets the threshold.
  if 'JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS' not in os.environ:
    jax.config.update('jax_persistent_cache_min_compile_time_secs', 0.5)


def _join_distributed_job() -> None:
  """jax.distributed.initialize for a multi-process job (nothing for one process);
  the processes other than 0 then print nothing to stdout (errors still reach stderr)."""
  import jax  # pylint: disable=g-import-not-at-top
  from image_classification.hosts import joining  # pylint: disable=g-import-not-at-top
  try:
    joined = joining.initialize(
        COORDINATOR_ADDRESS.value, NUM_PROCESSES.value, PROCESS_ID.value,
        auto=DISTRIBUTED.value, timeout_s=DISTRIBUTED_TIMEOUT.value)
  except joining.schedulers.DistributedError as e:
    command_line.fail(str(e))
  if joined and jax.process_index() != 0:
    # Python's prints and the C++ libraries' (gloo) alike: fd 1 goes to /dev/null.
    sys.stdout.flush()
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    os.close(devnull)


def start() -> None:
  """Applies the flags: the CPU's device count, the compilation cache, then joins a
  multi-process job. A bad value is one `error:` line and exit status 2."""
  try:
    split_host_into_devices(HOST_DEVICES.value)
    enable_compilation_cache(compilation_cache_dir(COMPILATION_CACHE_DIR.value))
  except app.UsageError as e:
    command_line.fail(str(e))
  _join_distributed_job()
