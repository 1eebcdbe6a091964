"""Using a trained model: load its parameters, evaluate them, classify image files.

A run leaves, beside its orbax checkpoints, a plain export of what it trained:

  WORKDIR/export/model.json      the model (registry name, kwargs, number of classes),
                                 the preprocessing (image shape, mean, std, resizing)
                                 and the class names; written when training starts
  WORKDIR/export/params.msgpack  the final parameters (EMA where used, frozen layers
                                 merged in), flax.serialization.msgpack_serialize
  WORKDIR/export/params.json     their step, epsilon and delta (and the total with
                                 the earlier runs they compose with, if any)

Loading them in Python::

  from image_classification.trained import inference
  model = inference.load('/tmp/run1')        # TrainedModel
  probs = model.probabilities(images)        # uint8 [n, H, W, C] -> [n, classes]
                                             # (anything else: InferenceError)
  model.params, model.class_names            # the raw pytree, the names

or with Flax alone: ``flax.serialization.msgpack_restore(open(path, 'rb').read())``
gives the parameter pytree for ``registry.build(card['model'], card['num_classes'],
**card['model_kwargs']).apply({'params': params}, x, is_training=False)``, where x is
the image scaled to [0, 1] then standardised with the card's mean and std.

A workdir without params.msgpack (a run stopped before its last step) is loaded from
its latest verified checkpoint, read-only.

Privacy: the exported parameters are the final noisy iterate (post-processing of the
privatised gradients), covered by the run's epsilon like its last checkpoint. They
hold none of the mechanism's secret randomness. Evaluation and prediction read the
test split or the user's images, not the private training data; the optional
validation accuracy is computed from private data without noise (see
data/validation.py).
"""
import csv
import dataclasses
import json
import os
import sys

import flax.serialization
import jax
import numpy as np

from image_classification.input import augmentation
from image_classification.data import base as data_base
from image_classification.data.readers import local_files
from image_classification.data import sources
from image_classification.data.readers import tfds_source
from image_classification.data import validation
from image_classification.models import features
from image_classification.models import registry
from image_classification.reporting import progress
from image_classification.workdir import run_files
from image_classification.trained import export
from image_classification.workdir import checkpoint_store
from image_classification import errors

IMAGE_EXTENSIONS = ('.png', '.jpg', '.jpeg', '.bmp', '.gif', '.webp', '.tif', '.tiff')


class InferenceError(errors.UserError):
  """A workdir or an image cannot be used; the message says what is missing."""


# ------------------------------------------------------------------------ loading
@dataclasses.dataclass
class TrainedModel:
  """A trained model with its preprocessing: ``probabilities(uint8 images)``."""
  card: dict
  params: dict
  step: int
  source: str  # where the parameters came from (a file or a checkpoint)

  def __post_init__(self):
    self.module = registry.build(self.card['model'], self.card['num_classes'],
                                 **_tuples(self.card['model_kwargs']))
    mean, std = tuple(self.card['mean']), tuple(self.card['std'])
    # The fixed extractor the model was trained behind (config.model.features).
    extract = (features.build(self.card['features'], self.card['image_shape'],
                              **(self.card.get('features_kwargs') or {}))
               if self.card.get('features') else (lambda x: x))

    @jax.jit
    def logits(params, images):
      x = extract(augmentation.standardise(images, mean, std))
      return self.module.apply({'params': params}, x, is_training=False)

    self._logits = logits

  @property
  def class_names(self) -> list[str]:
    return list(self.card['class_names'])

  def check_images(self, images) -> np.ndarray:
    """``images`` as a numpy array if it is what the model takes: uint8 [N, H, W, C]
    in the trained shape, values 0..255 as read from image files (the model scales
    them to [0, 1] and standardises them with the training mean and std itself).
    Raises InferenceError saying what was expected, what came, and the fix."""
    height, width, channels = (int(d) for d in self.card['image_shape'])
    images = np.asarray(images)
    expected = (f'expected uint8 images of shape [N, {height}, {width}, {channels}] '
                'with values 0..255 (the scale of the image files; the model '
                'standardises them with the training mean and std itself)')
    if images.ndim != 4 or tuple(images.shape[1:]) != (height, width, channels):
      if images.shape == (height, width, channels):
        fix = 'one image: add a batch axis, images[None]'
      elif images.ndim == 3 and images.shape[1:] == (height, width) and channels == 1:
        fix = 'add the channel axis, images[..., None]'
      else:
        fix = (f'the model was trained on {height}x{width}x{channels} images: resize '
               'them (inference.read_image does it for image files, as --predict)')
      raise InferenceError(f'{expected}, got shape {list(images.shape)}: {fix}')
    if images.dtype != np.uint8:
      if np.issubdtype(images.dtype, np.floating):
        fix = ('floats in [0, 1]: (images * 255).round().astype(np.uint8); floats in '
               '0..255: images.round().astype(np.uint8); do not standardise them')
      else:
        fix = 'convert values 0..255 with images.astype(np.uint8)'
      raise InferenceError(f'{expected}, got dtype {images.dtype}: {fix}')
    return images

  def logits(self, images: np.ndarray, batch_size: int = 1000) -> np.ndarray:
    """uint8 [N, H, W, C] (see ``check_images``) -> float32 logits [N, classes]."""
    images = self.check_images(images)
    out = [np.asarray(self._logits(self.params, images[i:i + batch_size]))
           for i in range(0, len(images), max(batch_size, 1))]
    return (np.concatenate(out) if out else
            np.zeros((0, self.card['num_classes']), np.float32))

  def probabilities(self, images: np.ndarray, batch_size: int = 1000) -> np.ndarray:
    return np.asarray(jax.nn.softmax(self.logits(images, batch_size), axis=-1))


def _tuples(value):
  """JSON lists back to tuples (Flax module fields such as channels=(16,))."""
  if isinstance(value, dict):
    return {k: _tuples(v) for k, v in value.items()}
  if isinstance(value, list):
    return tuple(_tuples(v) for v in value)
  return value


def read_card(workdir: str, config=None) -> dict:
  """export/model.json; for a workdir trained before it existed, rebuilt from
  ``config`` (the run's config.json) and the dataset it names, and written."""
  path = os.path.join(workdir, run_files.EXPORT, run_files.MODEL_CARD)
  if os.path.exists(path):
    with open(path) as f:
      return json.load(f)
  if config is None:
    raise InferenceError(
        f'{path} does not exist: {workdir!r} is not the workdir of a training run of '
        'this version (launch.py --config=... --workdir=DIR writes it when training '
        'starts); launch.py --evaluate/--predict rebuild it from its config.json')
  data = sources.load_dataset(config.data)
  card = export.model_card(config, data, data.train.image_shape)
  export.write_model_card(workdir, card)
  print(f'note: {workdir} predates {run_files.EXPORT}/{run_files.MODEL_CARD}: rebuilt it '
        f'from its {run_files.CONFIG} and {config.data.name}', flush=True)
  return card


def load(workdir: str, config=None) -> TrainedModel:
  """The workdir's final parameters (EMA where used), else its latest checkpoint's.

  ``config``: the run's config, needed only for workdirs written before the export
  existed (see read_card).
  """
  card = read_card(workdir, config)
  path = os.path.join(workdir, run_files.EXPORT, run_files.PARAMS)
  if os.path.exists(path):
    with open(path, 'rb') as f:
      raw = f.read()
    try:
      params = flax.serialization.msgpack_restore(raw)
    except Exception as e:  # pylint: disable=broad-except  # msgpack raises several kinds
      raise InferenceError(
          f'{path} is not a readable flax msgpack file ({type(e).__name__}: {e}): it '
          'was truncated or overwritten. Delete it to fall back to the latest '
          f'checkpoint in {os.path.join(workdir, checkpoint_store.CHECKPOINTS)}, or '
          'restore it from a copy') from None
    info = run_files.read_json(os.path.join(workdir, run_files.EXPORT),
                               run_files.PARAMS_INFO)
    return TrainedModel(card, params, int(info['step']), path)
  ckpts = checkpoint_store.Checkpoints(workdir, read_only=True)
  try:
    restored = ckpts.restore_latest()
  finally:
    ckpts.close()
  complete = _is_complete(workdir)
  if restored is None:
    raise InferenceError(
        f'{workdir!r} has neither {path} nor a checkpoint: ' +
        ('the run is complete (summary.json) but its export/ and checkpoints/ folders '
         'are missing (deleted or moved?); restore one of them' if complete else
         'the run stopped before its first checkpoint'))
  state = restored.state
  trainable = state['ema_params'] if card.get('ema') else state['params']
  params = {**(state.get('frozen') or {}), **trainable}
  why = ('the run is complete, but that file is missing (deleted or moved?); its final '
         'checkpoint holds the same parameters' if complete else
         'the run has not finished, or was trained before the export existed')
  print(f'note: {workdir} has no {run_files.EXPORT}/{run_files.PARAMS} ({why}): using '
        f'the checkpoint of step {restored.step}', flush=True)
  return TrainedModel(card, export.to_host(params), restored.step,
                      os.path.join(checkpoint_store.CHECKPOINTS, str(restored.step)))


def _is_complete(workdir: str) -> bool:
  """Whether summary.json marks the run complete."""
  try:
    return run_files.read_json(workdir, run_files.SUMMARY).get('status') == 'complete'
  except (run_files.RunFileError, OSError, ValueError, AttributeError):
    return False


# ------------------------------------------------------------------------ evaluate
def _source_logits(model: TrainedModel, source, batch_size: int):
  logits, labels = [], []
  starts = range(0, source.num_examples, batch_size)
  for start in progress.iterate(starts, len(starts), 'evaluating'):
    images, y = source.get(np.arange(start, min(start + batch_size,
                                                source.num_examples)))
    logits.append(model.logits(images, batch_size))
    labels.append(np.asarray(y))
  return np.concatenate(logits), np.concatenate(labels).astype(np.int64)


def scores(logits: np.ndarray, labels: np.ndarray, names: list[str]) -> dict:
  """top1, top5 (more than 5 classes), per_class_accuracy, confusion_matrix."""
  k = logits.shape[-1]
  predicted = np.argmax(logits, -1)
  confusion = np.zeros((k, k), np.int64)  # rows: true class, columns: predicted
  np.add.at(confusion, (labels, predicted), 1)
  per_class = {}
  for c in range(k):
    total = int(confusion[c].sum())
    per_class[names[c]] = float(confusion[c, c] / total) if total else None
  out = {'num_examples': int(len(labels)),
         'top1': float(np.mean(predicted == labels)) if len(labels) else None,
         'per_class_accuracy': per_class,
         'confusion_matrix': confusion.tolist()}
  if k > 5:
    top5 = np.argsort(-logits, axis=-1)[:, :5]
    out['top5'] = float(np.mean(np.any(top5 == labels[:, None], axis=-1)))
  return out


def plot_confusion(confusion, names: list[str], path: str, title: str) -> None:
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  confusion = np.asarray(confusion)
  k = len(names)
  size = min(4 + 0.45 * k, 30)
  fig, ax = plt.subplots(figsize=(size, size))
  ax.imshow(confusion, cmap='Blues')
  if k <= 40:
    ax.set_xticks(range(k), names, rotation=90)
    ax.set_yticks(range(k), names)
    if k <= 20:
      high = confusion.max() / 2 if confusion.size else 0
      for i in range(k):
        for j in range(k):
          ax.text(j, i, str(confusion[i, j]), ha='center', va='center', fontsize=8,
                  color='white' if confusion[i, j] > high else 'black')
  ax.set_xlabel('predicted class')
  ax.set_ylabel('true class')
  ax.set_title(title)
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)


def evaluate_workdir(workdir: str, config) -> dict:
  """Evaluates the workdir's parameters on the test split of ``config.data``.

  ``config`` is the run's config (config.json) with any overrides, e.g. another
  config.data.path for the same dataset. Writes WORKDIR/evaluation.json and
  WORKDIR/confusion_matrix.png; returns evaluation.json's content.
  """
  model = load(workdir, config)
  data = sources.load_dataset(config.data)
  if data.num_classes != model.card['num_classes']:
    raise InferenceError(
        f'the model has {model.card["num_classes"]} classes but config.data '
        f'({config.data.name}, path {config.data.path!r}) has {data.num_classes}')
  if tuple(data.test.image_shape) != tuple(model.card['image_shape']):
    raise InferenceError(
        f'the model takes images of shape {tuple(model.card["image_shape"])} but the '
        f'test split has {tuple(data.test.image_shape)}')
  batch_size = int(config.training.eval_batch_size or 0)
  batch_size = batch_size if batch_size > 0 else 1000
  names = model.class_names
  logits, labels = _source_logits(model, data.test, batch_size)
  result = {'split': 'test', **scores(logits, labels, names), 'class_names': names,
            'step': model.step, 'parameters': model.source,
            'ema': bool(model.card.get('ema')), 'dataset': config.data.name,
            'data_path': config.data.path}
  note = getattr(data, 'private_evaluation_note', '')
  if note:  # e.g. an image folder without test/: the test split is private data
    result['note'] = note
  fraction = config.data.validation_fraction or 0.0
  if fraction:
    _, held = validation.hold_out(data, fraction)
    v_logits, v_labels = _source_logits(model, held, batch_size)
    v = scores(v_logits, v_labels, names)
    result['validation'] = {
        'top1': v['top1'], 'top5': v.get('top5'), 'num_examples': v['num_examples'],
        'note': 'computed from private training data without noise'}
  try:
    info = run_files.read_json(os.path.join(workdir, run_files.EXPORT),
                               run_files.PARAMS_INFO)
    result.update(epsilon=info.get('epsilon'), delta=info.get('delta'))
    result.update({k: info[k] for k in ('total_epsilon_with_pretrained',
                                        'total_delta_with_pretrained') if k in info})
  except (OSError, ValueError):
    pass
  run_files.write_json(workdir, run_files.EVALUATION, result)
  plot_confusion(result['confusion_matrix'], names,
                 os.path.join(workdir, run_files.CONFUSION_PNG),
                 f'{config.model.name} on {config.data.name} test '
                 f'(top-1 {result["top1"]:.4f})')
  return result


# ------------------------------------------------------------------------ predict
def image_files(paths: list[str]) -> list[str]:
  """Image files named, or found (recursively, sorted) under folders named."""
  files = []
  for path in paths:
    if os.path.isdir(path):
      for root, dirs, names in os.walk(path):
        dirs.sort()
        files.extend(os.path.join(root, n) for n in sorted(names)
                     if n.lower().endswith(IMAGE_EXTENSIONS))
    elif os.path.isfile(path):
      files.append(path)
    else:
      raise InferenceError(f'--images: {path!r} is neither a file nor a folder')
  if not files:
    raise InferenceError(f'--images={",".join(paths)}: no image files '
                         f'({", ".join(IMAGE_EXTENSIONS)})')
  return files


# A file whose width / height differs from the training images' by more than this
# fraction (either way) is distorted by the resize, and --predict warns about it.
ASPECT_TOLERANCE = 0.1

PREDICTION_COLUMNS = ('file', 'class', 'probability', 'warning', 'error')


def _file_channels(picture) -> tuple[int, str]:
  """(number of channels, words) of a file as stored: palette images are colour."""
  if picture.mode in ('P', 'PA'):
    alpha = picture.mode == 'PA' or 'transparency' in picture.info
    return (4, 'palette colour with transparency') if alpha else (3, 'palette colour')
  bands = picture.getbands()
  return len(bands), picture.mode


def _warnings(picture, card: dict) -> list[str]:
  """How a file differs from the images the model was trained on, in words."""
  height, width, channels = card['image_shape']
  out = []
  w, h = picture.size
  if not card.get('center_crop') and not card.get('resized_from_any_shape') and w and h:
    ratio = (w / h) / (width / height)
    if max(ratio, 1 / ratio) > 1 + ASPECT_TOLERANCE:
      out.append(f'aspect ratio {w}x{h} (width x height) differs from the training '
                 f"images' {width}x{height}: resized to {width}x{height}, the image is "
                 'distorted; crop it to their proportions first')
  file_channels, words = _file_channels(picture)
  if file_channels != channels:
    target = 'grey (1 channel)' if channels == 1 else f'RGB ({channels} channels)'
    out.append(f'{file_channels} channel(s) ({words}) converted to the training '
               f"images' {target}")
  return out


def read_image_and_warnings(path: str, card: dict) -> tuple[np.ndarray, list[str]]:
  """One image file as the model's input (uint8 [H, W, C] in the trained shape) and
  the ways the file differs from the training images (aspect ratio beyond
  ASPECT_TOLERANCE, channel count), in words.

  Gray or colour as the model was trained; a centre crop for ImageNet models; other
  sizes are resized (bilinear) to the trained size, as image folders are.
  Raises InferenceError naming the file when it cannot be read.
  """
  from PIL import Image  # pylint: disable=g-import-not-at-top
  height, width, channels = card['image_shape']
  try:
    with Image.open(path) as picture:
      warnings = _warnings(picture, card)
      # 16-bit grey is scaled to 0..255 (PIL's convert would clip it to 255).
      picture = local_files.convert_picture(
          picture, 'L' if channels == 1 else 'RGB', path)
  except data_base.DataError as e:
    raise InferenceError(str(e)) from e
  except (OSError, ValueError) as e:
    raise InferenceError(f'cannot read image {path!r}: {e}') from e
  if card.get('center_crop'):
    array = np.asarray(picture, np.uint8)
    box = tfds_source.center_crop_box(array.shape[0], array.shape[1], height)
    array = tfds_source.crop_and_resize(array, box, height)
  else:
    if picture.size != (width, height):
      picture = picture.resize((width, height), Image.Resampling.BILINEAR)
    array = np.asarray(picture, np.uint8)
  if array.ndim == 2:
    array = array[..., None]
  return array, warnings


def read_image(path: str, card: dict) -> np.ndarray:
  """``read_image_and_warnings`` without the warnings."""
  return read_image_and_warnings(path, card)[0]


def predict(workdir: str, paths: list[str], out_path: str | None = None,
            config=None, batch_size: int = 1000) -> list[dict]:
  """Classifies image files; returns one row per file, in order, with the columns
  PREDICTION_COLUMNS, and writes them as CSV to ``out_path`` when given (replacing
  that file). ``config``: see ``load``.

  A file that cannot be read gets a row with its ``error`` (no class) and the others
  are still classified; a file whose aspect ratio or channel count differs from the
  training images gets a ``warning`` (several joined by '; ') and is classified
  after the conversion the warning describes. Raises InferenceError only for a
  path that is neither a file nor a folder, or for no image file at all.
  """
  model = load(workdir, config)
  files = image_files(paths)
  rows, images, readable = [], [], []
  for i, path in enumerate(files):
    row = dict.fromkeys(PREDICTION_COLUMNS, '')
    row.update(file=path, probability=None)
    try:
      array, warnings = read_image_and_warnings(path, model.card)
    except InferenceError as e:
      row['error'] = str(e)
    else:
      row['warning'] = '; '.join(warnings)
      images.append(array)
      readable.append(i)
    rows.append(row)
  if images:
    probs = model.probabilities(np.stack(images), batch_size)
    names = model.class_names
    for i, p in zip(readable, probs):
      best = int(np.argmax(p))
      rows[i].update({'class': names[best], 'probability': float(p[best])})
  if out_path:
    write_predictions(rows, out_path)
  return rows


def write_predictions(rows: list[dict], path: str) -> str:
  """Writes the rows of ``predict`` as CSV (atomically: a failed write leaves any
  earlier file whole); returns the path."""
  folder = os.path.dirname(os.path.abspath(path))
  os.makedirs(folder, exist_ok=True)
  tmp = f'{path}.tmp'
  with open(tmp, 'w', newline='') as f:
    writer = csv.DictWriter(f, fieldnames=list(PREDICTION_COLUMNS))
    writer.writeheader()
    writer.writerows(
        {**r, 'probability': ('' if r['probability'] is None
                              else f'{r["probability"]:.6f}')} for r in rows)
  os.replace(tmp, path)
  return path


def new_predictions_path(workdir: str) -> str:
  """Where --predict writes without --output: WORKDIR/predictions.csv, or, when that
  exists, the first free predictions-2.csv, predictions-3.csv, ... (earlier
  predictions are never overwritten)."""
  stem, ext = os.path.splitext(run_files.PREDICTIONS)
  path, n = os.path.join(workdir, run_files.PREDICTIONS), 1
  while os.path.exists(path):
    n += 1
    path = os.path.join(workdir, f'{stem}-{n}{ext}')
  return path


def print_predictions(rows: list[dict], path: str) -> None:
  """The console's view of ``predict``: one line per classified file (file, class,
  probability) on stdout; a file's warnings and a file that could not be read on
  stderr; then where the CSV is. Raises InferenceError when no file could be read."""
  for row in rows:
    if row['error']:
      print(f'warning: {row["file"]}: not classified: {row["error"]}', file=sys.stderr)
      continue
    if row['warning']:
      print(f'warning: {row["file"]}: {row["warning"]}', file=sys.stderr)
    print(f'{row["file"]}\t{row["class"]}\t{row["probability"]:.4f}')
  failed = sum(bool(r['error']) for r in rows)
  warned = sum(bool(r['warning']) for r in rows)
  if failed == len(rows):
    which = ('the one file could not' if len(rows) == 1
             else f'none of the {len(rows)} files could')
    raise InferenceError(f'{which} be read as an image (the reasons are in {path} and '
                         'above)')
  print(f'wrote {path} ({len(rows)} files: {len(rows) - failed} classified'
        + (f', {failed} unreadable' if failed else '')
        + (f', {warned} with warnings' if warned else '') + ')', flush=True)
