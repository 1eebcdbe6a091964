"""The one entry point: a switchboard to the command each package owns.

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

Each mode's flags and handler live with their package, in a command_line.py that
imports nothing of JAX at its top (--help is instant, and --host_devices sets the
device count before jax loads): trained/ (--evaluate, --predict), reporting/
(--report), sweeps/ (--sweep), tools/ (the benchmarks), training/ (the process
flags); image_classification/command_line.py holds --config, --workdir, the flag
parsing and the one place where errors and signals become an exit status.
"""
import sys

from image_classification import stop_signals
if __name__ == '__main__':  # before the imports below: a signal during them is kept
  stop_signals.install()

# pylint: disable=g-import-not-at-top,wrong-import-position
from absl import app
from absl import flags

from image_classification import command_line
from image_classification.reporting import command_line as report_command
from image_classification.sweeps import command_line as sweep_command
from image_classification.tools import command_line as tool_flags
from image_classification.trained import command_line as trained_command
from image_classification.hosts import command_line as process_flags
# pylint: enable=g-import-not-at-top,wrong-import-position

for _module in (command_line, process_flags, sweep_command, report_command,
                tool_flags, trained_command):
  flags.adopt_module_key_flags(_module)  # --help lists them as launch.py's own

_DRY_RUN = flags.DEFINE_bool(
    'dry_run', False, 'Validate the config, build the model and the privacy plan, '
    'write plan.json and exit without training.')
flags.DEFINE_bool(  # read from sys.argv before the other flags (see __main__ below)
    'privacy_calculator', False, 'Epsilon, the noise multiplier or the steps a budget '
    'allows, without a config or workdir: --dataset_size=N --batch_size=B '
    '(--steps=T | --epochs=E) (--noise_multiplier=S | --target_epsilon=EPS) '
    '[--delta --accountant --sampling --num_bands] (docs/privacy_calculator.md).')


def _missing_flag() -> str | None:
  """What a command lacks (checked before the imports: a second, not ten)."""
  if trained_command.requested():
    return None
  if not command_line.WORKDIR.value:
    if report_command.REPORT.value:
      return report_command.MISSING_WORKDIR
    missing = ('--workdir is' if command_line.CONFIG.value is not None
               else '--config and --workdir are')
    return (f'{missing} required, e.g. python launch.py --config=configs/quickstart.py '
            '--workdir=/tmp/run1 (python launch.py --help lists the commands)')
  if command_line.CONFIG.value is None and not report_command.REPORT.value:
    return '--config is required, e.g. --config=configs/quickstart.py'
  return None


def main(argv):
  del argv
  if _missing_flag():
    command_line.fail(_missing_flag())
  trained_command.check_flags()
  sweep_command.check_flags(command_line.CONFIG.value)
  process_flags.start()  # XLA devices, the compilation cache, a multi-process job
  # Imported after flag parsing so that --help is instant; before command_line.run,
  # so that a signal during these imports is 'nothing was done'.
  from image_classification import runs  # pylint: disable=g-import-not-at-top
  from image_classification.reporting import progress  # pylint: disable=g-import-not-at-top
  progress.quiet_library_logs()
  command_line.run(lambda: _command(runs))


def _command(runs) -> None:
  """The command the flags ask for (errors and signals: command_line.run)."""
  from image_classification import config as config_lib  # pylint: disable=g-import-not-at-top
  config, workdir = command_line.CONFIG.value, command_line.WORKDIR.value
  if trained_command.requested():
    trained_command.run(config)
    return
  config_lib.check_workdir(workdir)
  if report_command.REPORT.value:
    report_command.run(workdir)
  elif sweep_command.SWEEP.value:  # the runner, an executor, one point or the table
    sweep_command.run(config, workdir)
  else:
    sweep_command.refuse_stray_flags()
    if tool_flags.BENCHMARK_INPUT.value:
      from image_classification.tools import input_benchmark  # pylint: disable=g-import-not-at-top
      input_benchmark.run_from_flags(config, workdir)  # prints the rates, writes the json
    elif tool_flags.BENCHMARK.value:
      from image_classification.tools import benchmark  # pylint: disable=g-import-not-at-top
      benchmark.run_from_flags(config, workdir)  # prints the table, writes the json
    else:
      runs.train(config, workdir, dry_run=_DRY_RUN.value)


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
  trained_command.use_workdir_config(sys.argv)
  app.run(main, argv=sys.argv, flags_parser=command_line.parse_flags)
