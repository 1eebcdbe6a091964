"""--evaluate and --predict: using a trained model from the command line.

  python launch.py --evaluate=WORKDIR [--config.data.path=...]
  python launch.py --predict=WORKDIR --images=DIR_OR_FILES [--output=PATH.csv]

Without --config, the config is the workdir's own (workdir/saved_config.py), so that
``--config.data.path=...`` and other overrides apply to the config the run was trained
with: ``use_workdir_config(argv)``, called before the flags are parsed, makes it the
--config flag's default. Nothing of JAX is imported at the top of this module.
"""
import json
import os

from absl import flags

from image_classification import command_line
from image_classification import config_file
from image_classification.workdir import run_files

EVALUATE = flags.DEFINE_string(
    'evaluate', None, "Evaluate a training run's final parameters (EMA where used) on "
    'the test split of its dataset: writes WORKDIR/evaluation.json (top1, top5, '
    'per_class_accuracy, confusion_matrix) and confusion_matrix.png. Uses the '
    "workdir's config; --config.data.path=... and other overrides apply to it.")
PREDICT = flags.DEFINE_string(
    'predict', None, "Classify --images with a training run's final parameters and "
    "the run's preprocessing and class names; prints and writes a CSV (file, class, "
    'probability, warning, error): --output, else WORKDIR/predictions.csv or, if that '
    'exists, the next free predictions-2.csv, ... (never overwritten). An unreadable '
    'file gets a row with its error; a file whose aspect ratio or channels differ '
    'from the training images gets a warning (docs/predict.md).')
OUTPUT = flags.DEFINE_string(
    'output', None, 'With --predict: the CSV file to write (replaced if it exists).')
IMAGES = flags.DEFINE_list(
    'images', None, 'With --predict: image files and/or folders (searched '
    'recursively), comma-separated.')


def requested() -> bool:
  """Whether the command is --evaluate or --predict (after parsing)."""
  return bool(EVALUATE.value or PREDICT.value)


def use_workdir_config(argv: list[str]) -> None:
  """With --evaluate/--predict=WORKDIR and no --config: WORKDIR's own config becomes
  the --config flag's default (its overrides then apply to it). Before parsing; a
  workdir whose config cannot be read is one `error:` line naming the flag."""
  workdir = flag = None
  for i, arg in enumerate(argv):
    for name in ('--evaluate', '--predict'):
      if arg.startswith(name + '='):
        workdir, flag = arg.split('=', 1)[1], name
      elif arg == name and i + 1 < len(argv):
        workdir, flag = argv[i + 1], name
  if not workdir or any(a == '--config' or a.startswith('--config=') for a in argv):
    return
  try:
    flags.FLAGS.set_default('config', f'{command_line.SAVED_CONFIG}:{workdir}')
  except config_file.ConfigFileError as e:
    command_line.fail(f'{flag}={workdir}: {e.reason}')
  except (AttributeError, KeyError) as e:  # an override the run's config lacks
    command_line.fail(command_line.override_error(argv, e))


def check_flags() -> None:
  """Flags that do not fit --evaluate / --predict are one `error:` line, before
  anything is imported or loaded; --output never replaces a file that is not a CSV
  (the run's own files, an input image) nor a folder."""
  if OUTPUT.value and not PREDICT.value:
    command_line.fail('--output is for --predict only (the CSV of predictions); a '
                      'training run writes into --workdir')
  if requested() and command_line.WORKDIR.value:
    command = '--evaluate' if EVALUATE.value else '--predict'
    command_line.fail(
        f'--workdir={command_line.WORKDIR.value} is not used with {command}: the run is '
        f'the one in {command}=WORKDIR, and its results are written there; leave '
        '--workdir out')
  if PREDICT.value and not IMAGES.value:
    command_line.fail('--predict needs --images=FILE_OR_FOLDER[,...]')
  if PREDICT.value and OUTPUT.value:
    _check_output(OUTPUT.value, IMAGES.value)


def _check_output(output: str, images: list[str]) -> None:
  if os.path.isdir(output):
    command_line.fail(f'--output={output} is a folder; give the CSV file to write, e.g. '
                      f'--output={os.path.join(output, "predictions.csv")}')
  if os.path.exists(output) and any(os.path.exists(i) and os.path.samefile(i, output)
                                    for i in images):
    command_line.fail(f'--output={output} is one of the --images; give another file')
  if os.path.exists(output) and not output.lower().endswith('.csv'):
    command_line.fail(f'--output={output} exists and is not a .csv file, so it would be '
                      'replaced by the predictions; give a new file or a .csv to replace')


# What an explicit --config must share with the run's own config.json: the model the
# parameters belong to, and the dataset (its path, sizes and the like may differ).
_SAME = (('model', 'name'), ('model', 'kwargs'), ('model', 'features'),
         ('model', 'features_kwargs'), ('data', 'name'))


def _check_same_model_and_data(workdir: str, config, error) -> None:
  """An explicit --config of another model or dataset than the run's is refused (its
  parameters would not fit, or it would evaluate on data of other classes, and a
  tfds dataset might start downloading)."""
  if config is None or not hasattr(config, 'to_dict'):
    return
  saved = run_files.read_json(workdir, run_files.CONFIG)
  given = json.loads(json.dumps(config.to_dict(), default=str))  # tuples as saved
  differ = []
  for section, key in _SAME:
    old = (saved.get(section) or {}).get(key)
    new = (given.get(section) or {}).get(key)
    if old is not None and old != new:
      differ.append(f'config.{section}.{key}: {old!r} in the run, {new!r} in --config')
  if differ:
    raise error(f'--config does not describe the run in {workdir}: ' + '; '.join(differ)
                + '. Leave --config out to use the run\'s own config, and override only '
                'what differs here (e.g. --config.data.path=...)')


def run(config) -> None:
  """--evaluate and --predict with ``config`` (the workdir's own unless --config)."""
  from image_classification.trained import inference  # pylint: disable=g-import-not-at-top
  for workdir in filter(None, (EVALUATE.value, PREDICT.value)):
    if not os.path.exists(os.path.join(workdir, run_files.CONFIG)):
      raise inference.InferenceError(
          f'{workdir!r} holds no config.json: it is not the workdir of a training run '
          '(launch.py --config=... --workdir=DIR)')
    _check_same_model_and_data(workdir, config, inference.InferenceError)
  if EVALUATE.value:
    result = inference.evaluate_workdir(EVALUATE.value, config)
    top5 = f', top-5 {result["top5"]:.4f}' if 'top5' in result else ''
    validation = result.get('validation')
    # An evaluation split carved out of the private training data: no noise.
    from image_classification.reporting import privacy_report  # pylint: disable=g-import-not-at-top
    label = privacy_report.PRIVATE_TEST_LABEL if result.get('note') else ''
    print(f'test top-1 {result["top1"]:.4f}{top5}{label} on {result["num_examples"]} images '
          f'(step {result["step"]}, {"EMA" if result["ema"] else "final"} '
          'parameters)'
          + (f'; validation top-1 {validation["top1"]:.4f} (private data, no noise)'
             if validation else '')
          + f'; wrote {os.path.join(EVALUATE.value, run_files.EVALUATION)} and '
          f'{run_files.CONFUSION_PNG}', flush=True)
  if PREDICT.value:
    output = OUTPUT.value or inference.new_predictions_path(PREDICT.value)
    rows = inference.predict(PREDICT.value, IMAGES.value, out_path=output,
                             config=config)
    inference.print_predictions(rows, output)  # errors and warnings on stderr
