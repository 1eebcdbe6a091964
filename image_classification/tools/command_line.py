"""The benchmarks' flags, and the tools as commands of their own.

  python launch.py --config=configs/x.py --workdir=DIR --benchmark [--benchmark_batch_sizes=64,256]
  python launch.py --config=configs/x.py --workdir=DIR --benchmark_input [--benchmark_workers=1,2]
  python -m image_classification.tools.benchmark --config=configs/x.py --workdir=DIR [...]
  python -m image_classification.tools.input_benchmark --config=configs/x.py --workdir=DIR [...]

The handlers are the tools' own ``run_from_flags`` (benchmark.py, input_benchmark.py),
which read these flags; this module imports nothing of JAX at its top, so that
launch.py's --help is instant. The process flags (--host_devices and the rest) apply
only through launch.py: ``python -m`` has imported JAX before they could act, so the
tools refuse them with the launch.py command to use.
"""
import sys

from absl import app
from absl import flags

from image_classification import command_line
from image_classification import stop_signals

BENCHMARK = flags.DEFINE_bool(
    'benchmark', False, 'Time the jitted DP step against the same model\'s non-private '
    'step on random data; writes --workdir/benchmark.json and prints the table.')
BATCH_SIZES = flags.DEFINE_list(
    'benchmark_batch_sizes', ['64', '256'], 'Batch sizes for --benchmark.')
AUGMULTS = flags.DEFINE_list(
    'benchmark_augmults', ['1'], 'Augmentation multiplicities for --benchmark.')
IMPLEMENTATIONS = flags.DEFINE_list(
    'benchmark_implementations', None, "Per-example gradient implementations to time "
    "(vmap, fast, ghost); default: the config's training.per_example_grads.")
DTYPES = flags.DEFINE_list(
    'benchmark_dtypes', None, 'Compute dtypes to time with --benchmark (float32, '
    "bfloat16); default: the config's training.compute_dtype.")
IMAGE_SHAPE = flags.DEFINE_list(
    'benchmark_image_shape', None, 'H,W,C of the random images --benchmark times; '
    "default: the dataset's published shape (data/datasets.py). Needed where the "
    'files decide it (image_folder, npz): the benchmark reads no data.')
NUM_CLASSES = flags.DEFINE_integer(
    'benchmark_num_classes', None, 'Classes of the model --benchmark times; default: '
    "the dataset's published number (needed for image_folder and npz).")
BENCHMARK_INPUT = flags.DEFINE_bool(
    'benchmark_input', False, 'Time the input pipeline alone (decode, random resized '
    'crop, flip of the training split, on disk) for each --benchmark_workers count, '
    'and a plain single-process PIL loop; writes --workdir/input_benchmark.json.')
WORKERS = flags.DEFINE_list(
    'benchmark_workers', ['1', '2'], 'Worker process counts for --benchmark_input '
    '(0: the loading thread alone).')


# launch.py's process flags (hosts/command_line.py): they must act before JAX is
# imported, and a tool run with ``python -m`` has imported it already.
PROCESS_FLAGS = ('host_devices', 'coordinator_address', 'num_processes', 'process_id',
                 'distributed', 'distributed_timeout', 'compilation_cache_dir')
LAUNCH_FLAG = {'benchmark': '--benchmark', 'input_benchmark': '--benchmark_input'}


def refuse_process_flags(tool: str, argv) -> None:
  """A process flag given to ``python -m image_classification.tools.<tool>``: one
  error line naming the launch.py command that takes it."""
  for arg in argv[1:]:
    name = arg.lstrip('-').split('=')[0]
    if name.startswith('no') and name[2:] in PROCESS_FLAGS:
      name = name[2:]
    if arg.startswith('-') and name in PROCESS_FLAGS:
      command_line.fail(
          f'--{name} is a flag of launch.py, applied before JAX is imported; run the '
          f'same command as python launch.py {LAUNCH_FLAG.get(tool, "")} '
          f'--config=... --workdir=... {arg} (or set XLA_FLAGS='
          '--xla_force_host_platform_device_count=N for the device count)')


def tool_main(tool: str, run_from_flags) -> None:
  """``python -m image_classification.tools.<tool>``: --config, --workdir and the
  tool's flags; errors and signals as launch.py's (command_line.run)."""
  refuse_process_flags(tool, sys.argv)

  def main(argv):
    if len(argv) > 1:
      command_line.fail(f'unexpected arguments {argv[1:]}; flags are --name=value')
    if command_line.CONFIG.value is None or not command_line.WORKDIR.value:
      command_line.fail(f'--config and --workdir are required, e.g. python -m '
                        f'image_classification.tools.{tool} '
                        '--config=configs/quickstart.py --workdir=/tmp/benchmark')
    from image_classification import config as config_lib  # pylint: disable=g-import-not-at-top

    def command():
      config_lib.check_workdir(command_line.WORKDIR.value)
      run_from_flags(command_line.CONFIG.value, command_line.WORKDIR.value)

    command_line.run(command)

  stop_signals.install()
  app.run(main, argv=sys.argv, flags_parser=command_line.parse_flags)
