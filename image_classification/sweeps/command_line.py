"""--sweep and its flags: a sweep from the command line (docs/scale_out.md).

  python launch.py --config=configs/x.py --sweep=configs/sweeps/y.py --workdir=DIR
      [--print_only | --sweep_executor=local|slurm | --sweep_point=I | --report_only]

The sequential runner (runner.py), an executor, one point or the table (cluster.py).
Nothing of JAX is imported at the top of this module.
"""
import sys

from absl import flags

from image_classification.sweeps.points import SweepError

SWEEP = flags.DEFINE_string(
    'sweep', None, 'Sweep file (get_sweep() -> list of overrides): runs each point in '
    'its own sub-folder of --workdir and writes sweep.csv, sweep.md and sweep.png.')
PRINT_ONLY = flags.DEFINE_bool(
    'print_only', False, 'With --sweep: print one command per point and run nothing.')
# Sweeps on a cluster (image_classification/sweeps/cluster.py, docs/scale_out.md).
EXECUTOR = flags.DEFINE_enum(
    'sweep_executor', 'sequential', ['sequential', 'local', 'slurm'], 'With --sweep: '
    'sequential runs the points one after another in this process; slurm submits '
    'them as a Slurm job array through submitit and returns; local runs them as '
    'submitit jobs on this machine (--sweep_parallelism at a time) and waits.')
POINT = flags.DEFINE_integer(
    'sweep_point', None, 'With --sweep: train point I (0-based) alone, for any '
    'scheduler, e.g. --sweep_point=$SLURM_ARRAY_TASK_ID.')
REPORT_ONLY = flags.DEFINE_bool(
    'report_only', False, 'With --sweep: write sweep.csv/.md/.png from the points as '
    'they are now (running, submitted, stopped, failed and missing points marked); '
    'train and submit nothing.')
RESOURCES = {  # per point; else the sweep file's get_resources(), else defaults
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


def check_flags(config) -> None:
  """Loads the --sweep file and checks its points against ``config`` before JAX is
  imported: a missing or broken sweep file is one `error:` line within a second."""
  if not SWEEP.value or config is None:
    return
  from image_classification import command_line  # pylint: disable=g-import-not-at-top
  from image_classification.sweeps import sweep_file  # pylint: disable=g-import-not-at-top
  try:
    sweep_file.load_sweep(SWEEP.value, config)
  except SweepError as e:
    command_line.fail(str(e))


def refuse_stray_flags() -> None:
  """Raises SweepError for a sweep-only flag given without --sweep."""
  stray = [f'--{f.name}' for f in (EXECUTOR, POINT, REPORT_ONLY, *RESOURCES.values())
           if f.present]
  if stray:
    raise SweepError(f'{", ".join(stray)}: only with --sweep=FILE (a sweep file)')


def run(config, workdir: str) -> None:
  """--sweep: checks every point before anything trains; exits 1 when a point failed
  or did not finish."""
  from image_classification.sweeps import cluster  # pylint: disable=g-import-not-at-top
  from image_classification.sweeps import runner  # pylint: disable=g-import-not-at-top
  options = cluster.options_from_flags(
      EXECUTOR.value, POINT.value, REPORT_ONLY.value, PRINT_ONLY.value,
      **{key: flag.value for key, flag in RESOURCES.items()})
  status = cluster.command(
      config, SWEEP.value, workdir, options,
      base_command=runner.base_command_from_flags(flags.FLAGS, sys.argv[0]))
  if status:
    sys.exit(status)
