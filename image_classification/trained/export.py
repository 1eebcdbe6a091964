"""A run's export: what it trained, in plain files beside its checkpoints.

  WORKDIR/export/model.json      the model card: the model (registry name, kwargs,
                                 number of classes), the preprocessing (image shape,
                                 mean, std, resizing) and the class names; written
                                 when training starts
  WORKDIR/export/params.msgpack  the final parameters (EMA where used, frozen layers
                                 merged in), flax.serialization.msgpack_serialize
  WORKDIR/export/params.json     their step, epsilon and delta (and the total with
                                 the earlier runs they compose with, if any)

Privacy: the exported parameters are the final noisy iterate (post-processing of the
privatised gradients), covered by the run's epsilon like its last checkpoint. They
hold none of the mechanism's secret randomness; the model card records no statistic
of the private images (the dataset's mean and std are its published constants).
Reading them back is trained/inference.py's.
"""
import os

import flax.serialization
import jax
import numpy as np

from image_classification.data import class_names as class_names_lib
from image_classification.data import sources
from image_classification.models import custom as custom_models
from image_classification.workdir import run_files


def model_card(config, splits, image_shape) -> dict:
  """What it takes to rebuild the model and feed it an image (no parameters)."""
  return {
      # The user's own model from a file: its absolute path (models/custom.py).
      'model': custom_models.canonical_name(config.model.name),
      'model_kwargs': config.model.kwargs.to_dict(),
      # A fixed extractor the images go through before the model ('' none).
      'features': config.model.features or '',
      'features_kwargs': (config.model.features_kwargs.to_dict()
                          if 'features_kwargs' in config.model else {}),
      'num_classes': int(splits.num_classes),
      'class_names': class_names_lib.for_dataset(config.data, splits),
      'image_shape': [int(d) for d in image_shape],
      'mean': [float(m) for m in splits.mean],
      'std': [float(s) for s in splits.std],
      'dataset': config.data.name,
      # On-disk datasets (ImageNet) are evaluated on a centre crop; in-memory ones
      # are resized whole.
      'center_crop': sources.reads_on_disk(config.data),
      # Whether the training images were resized to image_shape from sizes of their
      # own (an image folder with data.image_size): then they had no one aspect ratio
      # and --predict does not warn about a file's. A flag only: no statistic of the
      # private images is recorded.
      'resized_from_any_shape': bool(config.data.image_size),
      'ema': config.training.ema.decay > 0,
  }


def write_model_card(workdir: str, card: dict) -> None:
  if jax.process_index() == 0:
    run_files.write_json(os.path.join(workdir, run_files.EXPORT), run_files.MODEL_CARD,
                         card)


def to_host(tree):
  """The tree as host numpy arrays (one copy of a replicated global array)."""
  def one(x):
    if isinstance(x, jax.Array) and not x.is_fully_addressable:
      x = x.addressable_data(0)  # replicated parameters: any copy is the value
    return np.asarray(jax.device_get(x))
  return jax.tree_util.tree_map(one, tree)


def export_params(workdir: str, params, *, step: int, epsilon: float,
                  delta: float, total_epsilon_with_pretrained: float | None = None,
                  total_delta_with_pretrained: float | None = None,
                  selected_on_validation: dict | None = None) -> str | None:
  """Writes export/params.msgpack (atomically) and params.json; process 0 only.

  params.json: step (of the parameters), the run's own epsilon and delta, and, when
  the run composes with earlier runs on the same data (trained/pretrained.py), the
  total. ``selected_on_validation`` (workdir/selection.py): the parameters are the
  step with the best validation accuracy, not the last; the epsilon is still the
  whole run's, since the choice looked at every evaluation.
  """
  host = to_host(params)
  if jax.process_index() != 0:
    return None
  folder = os.path.join(workdir, run_files.EXPORT)
  os.makedirs(folder, exist_ok=True)
  path = os.path.join(folder, run_files.PARAMS)
  tmp = path + '.tmp'
  with open(tmp, 'wb') as f:
    f.write(flax.serialization.msgpack_serialize(host))
  os.replace(tmp, path)
  info = {'step': int(step), 'epsilon': epsilon, 'delta': delta}
  if total_epsilon_with_pretrained is not None:
    info.update(total_epsilon_with_pretrained=total_epsilon_with_pretrained,
                total_delta_with_pretrained=total_delta_with_pretrained)
  if selected_on_validation is not None:
    info['selected_on_validation'] = selected_on_validation
  run_files.write_json(folder, run_files.PARAMS_INFO, info)
  return path

