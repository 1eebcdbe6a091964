"""The one entry point.

  python launch.py --config=configs/quickstart.py --workdir=/tmp/run1
  python launch.py --config=configs/quickstart.py --config.training.batch_size=512 ...
  python launch.py --config=configs/x.py --workdir=DIR --dry_run
"""
import sys

from absl import app
from absl import flags
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file('config', None, 'Experiment config file.',
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string('workdir', None, 'Output folder of the run.')
_DRY_RUN = flags.DEFINE_bool(
    'dry_run', False, 'Validate the config, build the model and the privacy plan, '
    'write plan.json and exit without training.')


def main(argv):
  del argv
  # Imported after flag parsing so that --help is instant.
  from image_classification import config as config_lib  # pylint: disable=g-import-not-at-top
  from image_classification.data import base as data_base  # pylint: disable=g-import-not-at-top
  from image_classification.training import loop  # pylint: disable=g-import-not-at-top
  if _CONFIG.value is None:
    raise app.UsageError('--config is required, e.g. --config=configs/quickstart.py')
  if not _WORKDIR.value:
    raise app.UsageError('--workdir is required: the folder where the run writes its files')
  try:
    loop.train(_CONFIG.value, _WORKDIR.value, dry_run=_DRY_RUN.value)
  except (config_lib.ConfigError, data_base.DataError) as e:
    print(f'error: {e}', file=sys.stderr)
    sys.exit(2)


if __name__ == '__main__':
  app.run(main)
