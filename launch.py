"""The one entry point.

  python launch.py --config=configs/quickstart.py --workdir=/tmp/run1
  python launch.py --config=configs/quickstart.py --config.training.batch_size=256 ...
  python launch.py --config=configs/x.py --workdir=DIR --dry_run
  python launch.py --config=configs/x.py --sweep=configs/sweeps/y.py --workdir=DIR [--print_only]
      [--sweep_executor=local|slurm | --sweep_point=I | --report_only]   (docs/scale_out.md)
  python launch.py --report=DIR1,DIR2 --workdir=OUT
  python launch.py --config=configs/x.py --workdir=DIR --benchmark [--benchmark_batch_sizes=64,256]
  python launch.py --config=configs/x.py --workdir=DIR --benchmark_input [--benchmark_workers=1,2]
  python launch.py --evaluate=WORKDIR [--config.data.path=...]
  python launch.py --predict=WORKDIR --images=DIR_OR_FILES [--output=PATH.csv]
  python launch.py --privacy_calculator --dataset_size=N --batch_size=B --steps=T
      --noise_multiplier=SIGMA   (or --epochs, --target_epsilon; docs/privacy_calculator.md)
  Ctrl-C or SIGTERM at any moment: a checkpoint (or nothing to save), a line saying
  how to resume, exit 130 / 143 (image_classification/stop_signals.py).
  add --host_devices=2 on a 2-core CPU: one XLA device per core (see --help)
  several processes (hosts): the same command in each, plus
    --coordinator_address=HOST:PORT --num_processes=N --process_id=I   (explicit), or
    --distributed   (jax.distributed detects SLURM, Kubernetes / GKE, Cloud TPU)
"""
import os
import sys

from image_classification import stop_signals
if __name__ == '__main__':  # before the imports below: a signal during them is kept
  stop_signals.install()

# pylint: disable=g-import-not-at-top,wrong-import-position
from absl import app
from absl import flags
from ml_collections import config_flags

from configs import base as base_config
from image_classification import config_file
from image_classification.workdir import run_files
# pylint: enable=g-import-not-at-top,wrong-import-position

_WORKDIR_CONFIG = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                               'image_classification', 'workdir', 'saved_config.py')
_CONFIG = config_flags.DEFINE_config_file(
    'config', None, 'Experiment config file, FILE.py or FILE.py:ARG; it may set only '
    'the fields of configs/base.py (docs/configs.md).', lock_config=True)
# Our loader: one error line for a missing, broken or misspelt config file.
flags.FLAGS['config'].parser = config_file.FlagParser(
    base_config.get_config, base_config.OPEN_GROUPS, unchecked=[_WORKDIR_CONFIG])
_WORKDIR = flags.DEFINE_string('workdir', None, 'Output folder of the run.')
_DRY_RUN = flags.DEFINE_bool(
    'dry_run', False, 'Validate the config, build the model and the privacy plan, '
    'write plan.json and exit without training.')
_SWEEP = flags.DEFINE_string(
    'sweep', None, 'Sweep file (get_sweep() -> list of overrides): runs each point in '
    'its own sub-folder of --workdir and writes sweep.csv, sweep.md and sweep.png.')
_PRINT_ONLY = flags.DEFINE_bool(
    'print_only', False, 'With --sweep: print one command per point and run nothing.')
# Sweeps on a cluster (image_classification/sweeps/cluster.py, docs/scale_out.md).
_SWEEP_EXECUTOR = flags.DEFINE_enum(
    'sweep_executor', 'sequential', ['sequential', 'local', 'slurm'], 'With --sweep: '
    'sequential runs the points one after another in this process; slurm submits '
    'them as a Slurm job array through submitit and returns; local runs them as '
    'submitit jobs on this machine (--sweep_parallelism at a time) and waits.')
_SWEEP_POINT = flags.DEFINE_integer(
    'sweep_point', None, 'With --sweep: train point I (0-based) alone, for any '
    'scheduler, e.g. --sweep_point=$SLURM_ARRAY_TASK_ID.')
_REPORT_ONLY = flags.DEFINE_bool(
    'report_only', False, 'With --sweep: write sweep.csv/.md/.png from the points as '
    'they are now (running, submitted, stopped, failed and missing points marked); '
    'train and submit nothing.')
_SWEEP_RESOURCES = {  # per point; else the sweep file's get_resources(), else defaults
    'partition': flags.DEFINE_string('sweep_partition', None, 'Slurm partition.'),
    'gpus': flags.DEFINE_integer('sweep_gpus', None, 'GPUs per point (Slurm: 1).'),
    'cpus': flags.DEFINE_integer('sweep_cpus', None, 'CPU cores per point.'),
    'time_minutes': flags.DEFINE_integer('sweep_time_minutes', None,
                                         'Time limit per point (Slurm: required).'),
    'mem_gb': flags.DEFINE_float('sweep_mem_gb', None, 'Memory per point, GB.'),
    'parallelism': flags.DEFINE_integer('sweep_parallelism', None, 'Points running at '
                                        'once (Slurm: all; local: 1).'),
    'slurm': flags.DEFINE_list('sweep_slurm', None, 'More sbatch parameters, KEY=VALUE: '
                               'account=...,qos=...,constraint=...'),
}
_BENCHMARK = flags.DEFINE_bool(
    'benchmark', False, 'Time the jitted DP step against the same model\'s non-private '
    'step on random data; writes --workdir/benchmark.json and prints the table.')
_BENCHMARK_BATCH_SIZES = flags.DEFINE_list(
    'benchmark_batch_sizes', ['64', '256'], 'Batch sizes for --benchmark.')
_BENCHMARK_AUGMULTS = flags.DEFINE_list(
    'benchmark_augmults', ['1'], 'Augmentation multiplicities for --benchmark.')
_BENCHMARK_IMPLEMENTATIONS = flags.DEFINE_list(
    'benchmark_implementations', None, "Per-example gradient implementations to time "
    "(vmap, fast, ghost); default: the config's training.per_example_grads.")
_BENCHMARK_DTYPES = flags.DEFINE_list(
    'benchmark_dtypes', None, 'Compute dtypes to time with --benchmark (float32, '
    "bfloat16); default: the config's training.compute_dtype.")
_BENCHMARK_INPUT = flags.DEFINE_bool(
    'benchmark_input', False, 'Time the input pipeline alone (decode, random resized '
    'crop, flip of the training split, on disk) for each --benchmark_workers count, '
    'and a plain single-process PIL loop; writes --workdir/input_benchmark.json.')
_BENCHMARK_WORKERS = flags.DEFINE_list(
    'benchmark_workers', ['1', '2'], 'Worker process counts for --benchmark_input '
    '(0: the loading thread alone).')
_HOST_DEVICES = flags.DEFINE_integer(
    'host_devices', None, 'On the CPU: split the host into this many XLA devices (e.g. '
    'its number of cores); the trainer then shards every batch over them with shard_map. '
    'XLA:CPU runs each convolution on one core, so on 2 cores 2 devices train a '
    'WRN-16-4 about 1.3x faster (results/benchmarks.md). Unset keeps JAX\'s '
    'default. The batch size must split over the devices.', lower_bound=1)
_COORDINATOR_ADDRESS = flags.DEFINE_string(
    'coordinator_address', None, 'Multi-process training: HOST:PORT of process 0, which '
    'runs the jax.distributed coordinator; with --num_processes and --process_id. '
    'Every process runs the same command (same --config, overrides and --workdir on a '
    'shared file system); process 0 alone writes the run files and prints.')
_NUM_PROCESSES = flags.DEFINE_integer(
    'num_processes', None, 'Multi-process training: how many processes the job has.')
_PROCESS_ID = flags.DEFINE_integer(
    'process_id', None, 'Multi-process training: this process\'s index, 0..N-1.')
_DISTRIBUTED = flags.DEFINE_bool(
    'distributed', False, 'Multi-process training with the cluster detected by '
    'jax.distributed.initialize() (SLURM, Kubernetes / GKE, Cloud TPU).')
_DISTRIBUTED_TIMEOUT = flags.DEFINE_float(
    'distributed_timeout', 120.0, 'Multi-process training: seconds to wait for every '
    'process to join, and for a silent process to be declared dead during the run; '
    'then the others stop with a message (re-running the same command resumes).')
_COMPILATION_CACHE_DIR = flags.DEFINE_string(
    'compilation_cache_dir', None,
    "JAX's persistent compilation cache, so that a resumed run, a sweep's later points "
    'and a second benchmark reuse compiled steps instead of compiling again. Default: '
    '$JAX_COMPILATION_CACHE_DIR if set, else $XDG_CACHE_HOME (or ~/.cache)/'
    "dp-image-classification/jax; 'none' turns it off. It holds compiled programs "
    'only: the secret noise key is an argument of the step, never compiled in.')
_EVALUATE = flags.DEFINE_string(
    'evaluate', None, "Evaluate a training run's final parameters (EMA where used) on "
    'the test split of its dataset: writes WORKDIR/evaluation.json (top1, top5, '
    'per_class_accuracy, confusion_matrix) and confusion_matrix.png. Uses the '
    "workdir's config; --config.data.path=... and other overrides apply to it.")
_PREDICT = flags.DEFINE_string(
    'predict', None, "Classify --images with a training run's final parameters and "
    "the run's preprocessing and class names; prints and writes a CSV (file, class, "
    'probability, warning, error): --output, else WORKDIR/predictions.csv or, if that '
    'exists, the next free predictions-2.csv, ... (never overwritten). An unreadable '
    'file gets a row with its error; a file whose aspect ratio or channels differ '
    'from the training images gets a warning (docs/predict.md).')
_OUTPUT = flags.DEFINE_string(
    'output', None, 'With --predict: the CSV file to write (replaced if it exists).')
_IMAGES = flags.DEFINE_list(
    'images', None, 'With --predict: image files and/or folders (searched '
    'recursively), comma-separated.')
_REPORT = flags.DEFINE_list(
    'report', None, 'Comma-separated run or sweep folders to aggregate into '
    '--workdir/report.md and plots.')
flags.DEFINE_bool(  # read from sys.argv before the other flags (see __main__ below)
    'privacy_calculator', False, 'Epsilon, the noise multiplier or the steps a budget '
    'allows, without a config or workdir: --dataset_size=N --batch_size=B '
    '(--steps=T | --epochs=E) (--noise_multiplier=S | --target_epsilon=EPS) '
    '[--delta --accountant --sampling --num_bands] (docs/privacy_calculator.md).')


def _split_host_into_devices(count: int | None) -> None:
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


def _compilation_cache_dir(flag_value) -> str | None:
  """The cache folder to use (None: off). An explicit flag wins over the environment."""
  if flag_value is not None:
    return None if flag_value.lower() in ('', 'none', 'off') else flag_value
  if os.environ.get('JAX_COMPILATION_CACHE_DIR'):
    return os.environ['JAX_COMPILATION_CACHE_DIR']
  base = os.environ.get('XDG_CACHE_HOME') or os.path.join(os.path.expanduser('~'), '.cache')
  return os.path.join(base, 'dp-image-classification', 'jax')


def _enable_compilation_cache(path) -> None:
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
  # evaluation step), not the many tiny ones.
  jax.config.update('jax_persistent_cache_min_compile_time_secs', 0.5)


def _fail(message: str) -> None:
  """One `error:` line and exit code 2."""
  print(f'error: {message}', file=sys.stderr, flush=True)
  sys.exit(2)


def _config_override_error(argv, error: Exception) -> str:
  """The message for a --config.a.b=v override that the config file does not hold."""
  config = flags.FLAGS['config'].parser.loaded
  spec = next((a.split('=', 1)[1] for a in argv if a.startswith('--config=')), None)
  fields = [a[len('--config.'):].split('=', 1)[0] for a in argv
            if a.startswith('--config.')]
  field = next((f for f in fields if config is not None
                and config_file.missing_field(config, f)), None)
  if field is None:
    return (f'loading --config={spec} with its overrides failed: '
            f'{type(error).__name__}: {error}')
  text = config_file.override_error(config, spec, field)
  if config_file.missing_field(config, field)[0] == 'model.kwargs':
    text += "; model.kwargs are the keyword arguments of the model's constructor"
    try:
      from image_classification.models import registry  # pylint: disable=g-import-not-at-top
      text += (f', and model {config.model.name!r} accepts '
               f'{registry.keyword_arguments(config.model.name)}')
    except Exception:  # pylint: disable=broad-except
      pass
  return text


def _parse_flags(argv):
  """absl's flag parsing; a bad flag, config file or override is one `error:` line
  and exit code 2 instead of a traceback or the help text."""
  try:
    parsed = flags.FLAGS(argv)
  except config_file.ConfigFileError as e:
    # For --evaluate/--predict the config is the workdir's own: name the flag given.
    shown = _WORKDIR_FLAG.get(e.spec) or f'--config={e.spec}'
    _fail(f'{shown}: {e.reason}')
  except flags.Error as e:  # e.g. --config.training.batch_size=abc, --host_devices=0
    _fail(f'{e}. Pass --helpfull to see the flags.')
  except (AttributeError, KeyError) as e:
    _fail(_config_override_error(argv, e))
  _stop_if_signalled()
  return parsed


def _stop_if_signalled() -> None:
  """A safe point before the command's work: exit 128 + signal, nothing to save."""
  signum = stop_signals.received()
  if signum is not None:
    print(f'stopped by {stop_signals.name(signum)} before the command started: nothing '
          'was done, nothing to save. To start, run the same command again:\n  '
          f'{stop_signals.command_line()}', file=sys.stderr, flush=True)
    sys.exit(128 + signum)


# --evaluate/--predict=WORKDIR with no --config: the config spec inserted -> the flag.
_WORKDIR_FLAG = {}


def _use_workdir_config(argv: list[str]) -> list[str]:
  """With --evaluate/--predict=WORKDIR and no --config: the workdir's own config.

  Inserted as --config=image_classification/workdir/saved_config.py:WORKDIR, so that
  --config.data.path=... overrides apply to the config the run was trained with.
  """
  workdir = flag = None
  for i, arg in enumerate(argv):
    for name in ('--evaluate', '--predict'):
      if arg.startswith(name + '='):
        workdir, flag = arg.split('=', 1)[1], name
      elif arg == name and i + 1 < len(argv):
        workdir, flag = argv[i + 1], name
  if not workdir or any(a == '--config' or a.startswith('--config=') for a in argv):
    return argv
  spec = f'{_WORKDIR_CONFIG}:{workdir}'
  _WORKDIR_FLAG[spec] = f'{flag}={workdir}'
  return argv[:1] + [f'--config={spec}'] + argv[1:]


def _use_a_trained_model(config) -> None:
  """--evaluate and --predict."""
  from image_classification.trained import inference  # pylint: disable=g-import-not-at-top
  for workdir in filter(None, (_EVALUATE.value, _PREDICT.value)):
    if not os.path.exists(os.path.join(workdir, run_files.CONFIG)):
      raise inference.InferenceError(
          f'{workdir!r} holds no config.json: it is not the workdir of a training run '
          '(launch.py --config=... --workdir=DIR)')
  if _EVALUATE.value:
    result = inference.evaluate_workdir(_EVALUATE.value, config)
    top5 = f', top-5 {result["top5"]:.4f}' if 'top5' in result else ''
    validation = result.get('validation')
    print(f'test top-1 {result["top1"]:.4f}{top5} on {result["num_examples"]} images '
          f'(step {result["step"]}, {"EMA" if result["ema"] else "final"} '
          'parameters)'
          + (f'; validation top-1 {validation["top1"]:.4f} (private data, no noise)'
             if validation else '')
          + f'; wrote {os.path.join(_EVALUATE.value, run_files.EVALUATION)} and '
          f'{run_files.CONFUSION_PNG}', flush=True)
  if _PREDICT.value:
    if not _IMAGES.value:
      raise app.UsageError('--predict needs --images=FILE_OR_FOLDER[,...]')
    output = _OUTPUT.value or inference.new_predictions_path(_PREDICT.value)
    rows = inference.predict(_PREDICT.value, _IMAGES.value, out_path=output,
                             config=config)
    inference.print_predictions(rows, output)  # errors and warnings on stderr


def _join_distributed_job() -> None:
  """jax.distributed.initialize for a multi-process job (nothing for one process);
  the processes other than 0 then print nothing to stdout (errors still reach stderr)."""
  from image_classification.training import distributed  # pylint: disable=g-import-not-at-top
  try:
    joined = distributed.initialize(
        _COORDINATOR_ADDRESS.value, _NUM_PROCESSES.value, _PROCESS_ID.value,
        auto=_DISTRIBUTED.value, timeout_s=_DISTRIBUTED_TIMEOUT.value)
  except distributed.DistributedError as e:
    print(f'error: {e}', file=sys.stderr, flush=True)
    sys.exit(2)
  if joined and not distributed.is_writer():
    # Python's prints and the C++ libraries' (gloo) alike: fd 1 goes to /dev/null.
    sys.stdout.flush()
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    os.close(devnull)


def _which_process() -> str:
  """'process I of N: ' in a multi-process job (each process prints its errors)."""
  if 'jax' not in sys.modules:
    return ''
  import jax  # pylint: disable=g-import-not-at-top
  count = jax.process_count()
  return f'process {jax.process_index()} of {count}: ' if count > 1 else ''


def _missing_flag() -> str | None:
  """What a command lacks (checked before the imports: a second, not ten)."""
  if _EVALUATE.value or _PREDICT.value:
    return None
  if not _WORKDIR.value:
    if _REPORT.value:
      return ('--workdir is required: the folder --report writes report.md and its '
              'plots to, e.g. --workdir=/tmp/report')
    missing = '--workdir is' if _CONFIG.value is not None else '--config and --workdir are'
    return (f'{missing} required, e.g. python launch.py --config=configs/quickstart.py '
            '--workdir=/tmp/run1 (python launch.py --help lists the commands)')
  if _CONFIG.value is None and not _REPORT.value:
    return '--config is required, e.g. --config=configs/quickstart.py'
  return None


def main(argv):
  del argv
  if _missing_flag():
    _fail(_missing_flag())
  if _OUTPUT.value and not _PREDICT.value:
    _fail('--output is for --predict only (the CSV of predictions); a training run '
          'writes into --workdir')
  try:
    _split_host_into_devices(_HOST_DEVICES.value)
    _enable_compilation_cache(_compilation_cache_dir(_COMPILATION_CACHE_DIR.value))
  except app.UsageError as e:
    _fail(str(e))
  _join_distributed_job()
  # Imported after flag parsing so that --help is instant.
  from image_classification import config as config_lib  # pylint: disable=g-import-not-at-top
  from image_classification.data import base as data_base  # pylint: disable=g-import-not-at-top
  from image_classification.privacy import mechanism_secret  # pylint: disable=g-import-not-at-top
  from image_classification.reporting import progress  # pylint: disable=g-import-not-at-top
  from image_classification.reporting import report  # pylint: disable=g-import-not-at-top
  from image_classification import sweeps  # pylint: disable=g-import-not-at-top
  from image_classification.training import distributed  # pylint: disable=g-import-not-at-top
  from image_classification.trained import inference  # pylint: disable=g-import-not-at-top
  from image_classification.workdir import run_control  # pylint: disable=g-import-not-at-top
  progress.quiet_library_logs()
  _stop_if_signalled()
  # From here a signal outside training stops at once (training defers it to its
  # next safe point: a checkpoint, or nothing to save).
  stop_signals.set_immediate()
  try:
    _command()
  except (config_lib.ConfigError, data_base.DataError, sweeps.SweepError,
          mechanism_secret.SecretError, distributed.DistributedError,
          inference.InferenceError, report.ReportError, app.UsageError) as e:
    print(f'error: {_which_process()}{e}', file=sys.stderr)
    sys.exit(2)
  except run_control.Stopped as e:  # a signal, acted on at a safe point
    print(e.message, file=sys.stderr, flush=True)
    sys.exit(e.exit_code)
  except KeyboardInterrupt as e:  # a signal outside training, or a second Ctrl-C
    signum = getattr(e, 'signum', 2)
    print(f'\ninterrupted by {stop_signals.name(signum)}: stopped at once (a training '
          'run keeps its last checkpoint, from which the same command resumes):\n  '
          f'{run_control.resume_command()}', file=sys.stderr, flush=True)
    # At once: computations still in flight in XLA's threads can crash the
    # interpreter's shutdown (a segmentation fault instead of 128 + signal).
    sys.stdout.flush()
    os._exit(128 + signum)  # pylint: disable=protected-access
  signum = stop_signals.received()
  if signum is not None:  # came after the last safe point: the work is done
    print(f'received {stop_signals.name(signum)} as the command ended: its work is '
          'complete and saved; exit status 128 + the signal says it was signalled',
          file=sys.stderr, flush=True)
    sys.exit(128 + signum)


def _command() -> None:
  """The command the flags ask for (errors and signals: main)."""
  from image_classification import config as config_lib  # pylint: disable=g-import-not-at-top
  from image_classification import sweeps  # pylint: disable=g-import-not-at-top
  if _EVALUATE.value or _PREDICT.value:
    _use_a_trained_model(_CONFIG.value)
    return
  config_lib.check_workdir(_WORKDIR.value)
  if _REPORT.value:
    from image_classification.reporting import report  # pylint: disable=g-import-not-at-top
    result = report.make_report(_REPORT.value, _WORKDIR.value)
    print(f"wrote {result['report']}")
    for problem in result.get('problems', []):
      print(f'warning: {problem}', file=sys.stderr)
    return
  if _SWEEP.value:  # the sequential runner, an executor, one point or the table
    from image_classification.sweeps import cluster as sweep_cluster  # pylint: disable=g-import-not-at-top
    options = sweep_cluster.options_from_flags(
        _SWEEP_EXECUTOR.value, _SWEEP_POINT.value, _REPORT_ONLY.value, _PRINT_ONLY.value,
        **{key: flag.value for key, flag in _SWEEP_RESOURCES.items()})
    status = sweep_cluster.command(  # checks every point before anything trains
        _CONFIG.value, _SWEEP.value, _WORKDIR.value, options,
        base_command=sweeps.base_command_from_flags(flags.FLAGS, sys.argv[0]))
    if status:
      sys.exit(status)
    return
  stray = [f'--{f.name}' for f in (_SWEEP_EXECUTOR, _SWEEP_POINT, _REPORT_ONLY,
                                   *_SWEEP_RESOURCES.values()) if f.present]
  if stray:
    raise sweeps.SweepError(f'{", ".join(stray)}: only with --sweep=FILE (a sweep file)')
  # The audit's run hook wraps loop.train / loop.check (no audit when it is off).
  from image_classification import runs  # pylint: disable=g-import-not-at-top
  if _BENCHMARK_INPUT.value:
    from image_classification.tools import input_benchmark  # pylint: disable=g-import-not-at-top
    input_benchmark.run_input_benchmark(  # prints the rates, writes the json
        _CONFIG.value, _WORKDIR.value,
        input_benchmark.parse_workers(_BENCHMARK_WORKERS.value))
    return
  if _BENCHMARK.value:
    from image_classification.tools import benchmark  # pylint: disable=g-import-not-at-top
    batch_sizes, augmults, implementations = benchmark.parse_flags(
        _BENCHMARK_BATCH_SIZES.value, _BENCHMARK_AUGMULTS.value,
        _BENCHMARK_IMPLEMENTATIONS.value)
    dtypes = benchmark.parse_dtypes(_BENCHMARK_DTYPES.value)
    benchmark.run_benchmark(  # prints the table and writes benchmark.json
        _CONFIG.value, _WORKDIR.value, batch_sizes=batch_sizes, augmults=augmults,
        implementations=implementations, dtypes=dtypes)
    return
  runs.train(_CONFIG.value, _WORKDIR.value, dry_run=_DRY_RUN.value)


def _privacy_calculator(argv: list[str]) -> int:
  """--privacy_calculator: image_classification/privacy_calculator.py parses the
  other flags (no config, no workdir); one error line and 2 for a bad one."""
  stop_signals.set_immediate()  # nothing to save
  try:
    from image_classification import privacy_calculator  # pylint: disable=g-import-not-at-top
    return privacy_calculator.main(argv)
  except KeyboardInterrupt as e:
    return 128 + getattr(e, 'signum', 2)


if __name__ == '__main__':
  if any(a in ('--privacy_calculator', '--privacy_calculator=true') for a in sys.argv):
    sys.exit(_privacy_calculator(sys.argv))
  app.run(main, argv=_use_workdir_config(sys.argv), flags_parser=_parse_flags)
