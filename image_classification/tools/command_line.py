"""The benchmarks' flags, and the tools as commands of their own.

  python launch.py --config=configs/x.py --workdir=DIR --benchmark [--benchmark_batch_sizes=64,256]
  python launch.py --config=configs/x.py --workdir=DIR --benchmark_input [--benchmark_workers=1,2]
  python -m image_classification.tools.benchmark --config=configs/x.py --workdir=DIR [...]
  python -m image_classification.tools.input_benchmark --config=configs/x.py --workdir=DIR [...]

The handlers are the tools' own ``run_from_flags`` (benchmark.py, input_benchmark.py),
which read these flags; this module imports nothing of JAX at its top, so that
launch.py's --help is instant. (Through launch.py the process flags, --host_devices
and the rest, apply too.)
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


def tool_main(tool: str, run_from_flags) -> None:
  """``python -m image_classification.tools.<tool>``: --config, --workdir and the
  tool's flags; errors and signals as launch.py's (command_line.run)."""

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
