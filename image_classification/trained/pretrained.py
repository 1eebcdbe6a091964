"""Fine-tuning: restore pre-trained parameters into a freshly initialised model.

``load_pretrained(path, params)`` reads the parameters saved at ``path`` and returns
a params dict shaped exactly like ``params`` (the fresh initialisation of the model
the config builds): every backbone leaf comes from the file, the classifier
``params['head']`` stays the fresh one. Formats:

* a folder: an orbax checkpoint of a TrainState (its ``params`` merged with
  ``frozen``) or of a bare params dict. A run's workdir, its ``checkpoints/``
  folder (workdir/checkpoint_store.py) or any orbax CheckpointManager folder gives its
  latest numbered step, and within a step the ``state`` item (or the only item).
  Nothing in the folder is modified;
* ``.npz``: one array per leaf, keyed by its path joined with '/'
  (``group0_block0/conv1/kernel``), as ``save_params`` writes;
* anything else: a flax msgpack (``flax.serialization.to_bytes``) of a params dict
  or of a dict holding one under ``'params'``.

Why the head is always replaced: the pre-trained classifier maps features to the
source task's labels (ImageNet-32's 1000 classes, JFT's 18k), which are not the
target's even when the counts agree, and De et al. 2022 (jax_privacy's
``reset_classifier=True``) always start fine-tuning from a fresh head. Pass
``reset_head=False`` to keep a head of matching shape (resuming on the same labels).

Privacy: parameters trained on public data (or another party's data) cost no budget.
Parameters from earlier DP runs of this platform on the same private data do, however
long the chain of fine-tuning runs that leads here and whatever data the runs between
trained on: ``composition`` gathers every ancestor from the parent's privacy.json
(``lineage``), composes this run with each one trained on the same data, and refuses
unless the config accepts that the runs compose and the total is reported.
"""
import json
import os
from typing import Any, Mapping

from flax import serialization
import jax.numpy as jnp
import numpy as np

from image_classification import config as config_lib
from image_classification.workdir import run_files
from image_classification.workdir import checkpoint_store

HEAD = 'head'


class PretrainedError(config_lib.ConfigError):
  """The pre-trained parameters are missing, unreadable or do not fit the model.

  A ConfigError, so launch.py reports it as a one-line error about
  config.model.pretrained_path.
  """


def _flatten(tree: Mapping[str, Any], prefix: str = '') -> dict[str, Any]:
  """{'a': {'b': x}} -> {'a/b': x}; leaves are anything that is not a mapping."""
  flat = {}
  for key, value in tree.items():
    path = f'{prefix}/{key}' if prefix else str(key)
    if isinstance(value, Mapping):
      flat.update(_flatten(value, path))
    else:
      flat[path] = value
  return flat


def _unflatten(flat: Mapping[str, Any]) -> dict[str, Any]:
  tree: dict[str, Any] = {}
  for path, value in flat.items():
    node = tree
    *parents, leaf = path.split('/')
    for p in parents:
      node = node.setdefault(p, {})
    node[leaf] = value
  return tree


def _to_dict(tree: Any) -> Any:
  """FrozenDicts, flax struct dataclasses (TrainState) -> plain nested dicts."""
  if hasattr(tree, '__dataclass_fields__'):
    return {k: _to_dict(getattr(tree, k)) for k in tree.__dataclass_fields__}
  if isinstance(tree, Mapping):
    return {str(k): _to_dict(v) for k, v in tree.items()}
  return tree


def save_params(path: str, params: Mapping[str, Any]) -> None:
  """Writes a params dict as .npz (path ends in .npz) or flax msgpack (otherwise)."""
  params = _to_dict(params)
  parent = os.path.dirname(os.path.abspath(path))
  os.makedirs(parent, exist_ok=True)
  if path.endswith('.npz'):
    flat = {k: np.asarray(v) for k, v in _flatten(params).items()}
    with open(path, 'wb') as f:
      np.savez(f, **flat)
    return
  tree = {k: np.asarray(v) for k, v in _flatten(params).items()}
  with open(path, 'wb') as f:
    f.write(serialization.msgpack_serialize(_unflatten(tree)))


# ------------------------------------------------------------------ reading
def _params_in(tree: Any, path: str) -> dict[str, Any]:
  """The params dict inside what a file held: a TrainState, {'params': ...}, or
  the params themselves (recognised by their 'head')."""
  tree = _to_dict(tree)
  if not isinstance(tree, Mapping):
    raise PretrainedError(f'{path}: holds a {type(tree).__name__}, not a params dict')
  if HEAD in tree:
    return dict(tree)
  if isinstance(tree.get('params'), Mapping):
    params = dict(tree['params'])
    frozen = tree.get('frozen')
    if isinstance(frozen, Mapping):  # a TrainState: with train_only_head the
      params = {**frozen, **params}  # backbone is in `frozen`
    return _params_in(params, path)  # also unwraps flax {'params': {'params': ..}}
  raise PretrainedError(
      f"{path}: found no parameters: expected a params dict with a '{HEAD}' entry, "
      f"a dict with 'params', or a TrainState; top-level keys are {sorted(tree)}")


def _read_npz(path: str) -> dict[str, Any]:
  try:
    with np.load(path, allow_pickle=False) as data:
      flat = {k: np.asarray(data[k]) for k in data.files}
  except Exception as e:  # pylint: disable=broad-except
    raise PretrainedError(f'{path}: not a readable .npz file ({e})') from e
  if not flat:
    raise PretrainedError(f'{path}: the .npz file holds no arrays')
  return _unflatten(flat)


def _read_msgpack(path: str) -> Any:
  try:
    with open(path, 'rb') as f:
      return serialization.msgpack_restore(f.read())
  except Exception as e:  # pylint: disable=broad-except
    raise PretrainedError(
        f'{path}: not a readable flax msgpack file ({type(e).__name__}: {e}); '
        'give an orbax checkpoint folder, a .npz or a flax msgpack of params') from e


def _is_orbax_item(folder: str) -> bool:
  names = set(os.listdir(folder))
  return bool(names & {'_METADATA', 'manifest.ocdbt', '_sharding', 'checkpoint',
                       'd', 'ocdbt.process_0'})


def _orbax_item_folder(folder: str) -> str:
  """The folder orbax can restore: a run's workdir -> its checkpoints/ folder ->
  the latest numbered step -> its item ('state' for this platform's checkpoints)."""
  if (not _is_orbax_item(folder)
      and os.path.isdir(os.path.join(folder, checkpoint_store.CHECKPOINTS))):
    folder = os.path.join(folder, checkpoint_store.CHECKPOINTS)
  steps = [n for n in os.listdir(folder)
           if n.isdigit() and os.path.isdir(os.path.join(folder, n))]
  if steps and not _is_orbax_item(folder):
    folder = os.path.join(folder, max(steps, key=int))
  if _is_orbax_item(folder):
    return folder
  items = sorted(n for n in os.listdir(folder)
                 if os.path.isdir(os.path.join(folder, n)) and not n.startswith('.')
                 and _is_orbax_item(os.path.join(folder, n)))
  for preferred in ('params', 'state', 'default', 'train_state'):
    if preferred in items:
      return os.path.join(folder, preferred)
  if len(items) == 1:
    return os.path.join(folder, items[0])
  raise PretrainedError(
      f'{folder}: not an orbax checkpoint (no orbax metadata) and no single item '
      f'folder inside it (found {items or "none"})')


def _read_orbax(folder: str) -> Any:
  item = _orbax_item_folder(folder)
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
  try:
    with ocp.PyTreeCheckpointer() as checkpointer:
      return checkpointer.restore(os.path.abspath(item))
  except Exception as e:  # pylint: disable=broad-except
    raise PretrainedError(
        f'{item}: orbax could not restore this checkpoint ({type(e).__name__}: '
        f'{e})') from e


def read_params(path: str) -> dict[str, Any]:
  """The params dict saved at ``path`` (any supported format), as numpy arrays."""
  if not path:
    raise PretrainedError('no pre-trained checkpoint path given')
  if not os.path.exists(path):
    raise PretrainedError(
        f'{path}: no such file or folder (config.model.pretrained_path); give an '
        'orbax checkpoint folder, a .npz or a flax msgpack of pre-trained params')
  if os.path.isdir(path):
    tree = _read_orbax(path)
  elif path.endswith('.npz'):
    tree = _read_npz(path)
  else:
    tree = _read_msgpack(path)
  params = _params_in(tree, path)
  return _unflatten({k: np.asarray(v) for k, v in _flatten(params).items()})


# ------------------------------------------------------------------ merging
def merge_pretrained(loaded: Mapping[str, Any], params: Mapping[str, Any],
                     source: str = 'the checkpoint',
                     reset_head: bool = True) -> dict[str, Any]:
  """``params`` with every non-head leaf replaced by the one in ``loaded``.

  Args:
    loaded: pre-trained params (nested dict of arrays).
    params: the model's fresh params; its structure and shapes are the contract.
      Leaves may be arrays or jax.ShapeDtypeStructs (a dry run's abstract params).
    source: names the file in error messages.
    reset_head: keep the fresh ``head`` (True, as the paper) or take the loaded
      one when its shapes match (False; a mismatch then falls back to the fresh).

  Raises:
    PretrainedError: naming the first backbone parameter (sorted by path) that is
      missing from ``loaded``, has another shape, or is in ``loaded`` only.
  """
  fresh = _flatten(_to_dict(params))
  old = _flatten(_to_dict(loaded))
  head = HEAD + '/'
  if not any(k.startswith(head) for k in fresh):
    raise PretrainedError(f"the model has no '{HEAD}' parameters to replace")
  backbone = sorted(k for k in fresh if not k.startswith(head))
  for key in backbone:
    if key not in old:
      raise PretrainedError(
          f'{source}: backbone parameter {key!r} of shape {tuple(fresh[key].shape)} '
          'is missing from the checkpoint; is it the same model family, depth and '
          f'width? checkpoint has e.g. {sorted(old)[:3]}')
    if tuple(old[key].shape) != tuple(fresh[key].shape):
      raise PretrainedError(
          f'{source}: backbone parameter {key!r} has shape {tuple(old[key].shape)} '
          f'in the checkpoint but {tuple(fresh[key].shape)} in the model; check '
          'config.model.kwargs (depth, width, variant) and the image channels')
  extra = sorted(k for k in old if not k.startswith(head) and k not in fresh)
  if extra:
    raise PretrainedError(
        f'{source}: parameter {extra[0]!r} is in the checkpoint but not in the model '
        f'({len(extra)} such); is it the same model family, depth and width?')

  head_keys = [k for k in fresh if k.startswith(head)]
  keep_head = not reset_head and all(
      k in old and tuple(old[k].shape) == tuple(fresh[k].shape) for k in head_keys)
  merged = {}
  for key, value in fresh.items():
    if key.startswith(head) and not keep_head:
      merged[key] = value
    else:
      merged[key] = _cast(old[key], value)
  return _unflatten(merged)


def _cast(array, like):
  """``array`` in the dtype of ``like`` (an array or a ShapeDtypeStruct)."""
  if not hasattr(like, 'dtype') or not hasattr(like, 'shape'):
    return array
  if type(like).__name__ == 'ShapeDtypeStruct':
    return like  # abstract: shapes were checked, nothing to materialise
  return jnp.asarray(array, dtype=like.dtype)


def load_pretrained(path: str, params: Mapping[str, Any],
                    reset_head: bool = True) -> dict[str, Any]:
  """Restores pre-trained parameters at ``path`` into ``params``' structure.

  Args:
    path: orbax checkpoint folder, .npz or flax msgpack (see the module docstring).
    params: the freshly initialised params of the model to fine-tune.
    reset_head: see merge_pretrained; True (the paper's choice) keeps the fresh head.

  Returns:
    A params dict with ``params``' structure, shapes and dtypes: the backbone from
    ``path``, ``params['head']`` freshly initialised.

  Raises:
    PretrainedError: naming ``path`` when it is missing or unreadable, and the first
      mismatching parameter path when the backbone does not fit.
  """
  return merge_pretrained(read_params(path), params, source=path,
                          reset_head=reset_head)


# ------------------------------------------------------------------ privacy
def earlier_run_files(path: str) -> tuple[dict, dict] | None:
  """(config.json, privacy.json) of the run of this platform that wrote ``path``.

  ``path`` may be the run's workdir, its checkpoints/ folder, a step or item inside
  it, or a parameter file exported into the workdir; None when no run files are found
  (parameters from elsewhere).
  """
  folder = os.path.abspath(path if os.path.isdir(path) else os.path.dirname(path))
  for _ in range(4):
    files = [os.path.join(folder, n) for n in (run_files.CONFIG, run_files.PRIVACY)]
    if all(os.path.exists(f) for f in files):
      try:
        loaded = []
        for f in files:
          with open(f) as handle:
            loaded.append(json.load(handle))
        return loaded[0], loaded[1]
      except (OSError, ValueError) as e:
        raise PretrainedError(
            f'{folder}: the run files of the run that trained config.model.'
            f'pretrained_path cannot be read ({e}); its privacy cost cannot be '
            'checked') from e
    folder = os.path.dirname(folder)
  return None


def dataset_identity(data: Mapping[str, Any]) -> dict[str, Any]:
  """What identifies a run's training data (its config's ``data``): the dataset's
  name and, for files a user brings (image_folder, npz), whose names say nothing,
  the real path of the files."""
  identity = {'name': data.get('name')}
  if identity['name'] in _NAMED_BY_PATH:
    identity['path'] = os.path.realpath(data.get('path') or '')
  return identity


_NAMED_BY_PATH = ('image_folder', 'npz')


def _recorded_identity(config: Mapping, privacy: Mapping) -> dict[str, Any]:
  """An earlier run's dataset identity: as its privacy.json records it (the real path
  resolved where it ran), else from its config.json, where a relative path cannot be
  resolved (it was relative to the directory that run was launched from): then the
  path is unknown and the data are assumed the same as any of the same name."""
  if isinstance(privacy.get('dataset_identity'), Mapping):
    return dict(privacy['dataset_identity'])
  data = config.get('data', {})
  if data.get('name') in _NAMED_BY_PATH and not os.path.isabs(data.get('path') or ''):
    return {'name': data.get('name')}
  return dataset_identity(data)


def _same_data(dataset: Mapping[str, Any], data_config) -> bool:
  """Whether an ancestor with ``dataset`` (dataset_identity) trained on this run's
  data: the same name, and for image_folder/npz the same real path (unknown, in an
  old record: assumed the same)."""
  if dataset.get('name') != data_config.name:
    return False
  if data_config.name in _NAMED_BY_PATH and dataset.get('path') is not None:
    return os.path.realpath(dataset['path']) == \
        os.path.realpath(data_config.path or '')
  return True


def _ancestor(path: str, config: Mapping, privacy: Mapping) -> dict[str, Any]:
  """The lineage entry of the run whose run files are (config, privacy).

  An ancestor that has not taken all its planned steps may still train on the same
  data after this run starts from its weights: it is charged its whole planned
  budget (the target epsilon, which the plan never passes), not what it has spent so
  far, so that the total stays true however the ancestor goes on.
  """
  epsilon = privacy.get('epsilon')
  unfinished = privacy.get('steps_taken') is not None and privacy.get(
      'steps') is not None and privacy['steps_taken'] < privacy['steps']
  if unfinished and privacy.get('target_epsilon') is not None:
    epsilon = max(epsilon if epsilon is not None else 0.0, privacy['target_epsilon'])
  return {'path': path, 'platform_run': True,
          'dataset': _recorded_identity(config, privacy),
          'epsilon': epsilon, 'delta': privacy.get('delta'),
          'non_private': bool(privacy.get('non_private')),
          **({'charged_planned_budget': True} if unfinished else {})}


def _outside(path: str) -> dict[str, Any]:
  """The lineage entry of parameters that no run of this platform wrote."""
  return {'path': path, 'platform_run': False}


def _recorded_lineage(config: Mapping, privacy: Mapping) -> list[dict[str, Any]]:
  """The ancestors a run's privacy.json records (their generations counted from that
  run). A privacy.json written before lineages were recorded holds only its
  parent's 'pretrained' record: the chain is then followed on disk from the
  parent's pretrained_path, or ends with what that record says."""
  if isinstance(privacy.get('lineage'), list):
    return [dict(a) for a in privacy['lineage']]
  parent_path = (config.get('model') or {}).get('pretrained_path')
  if not parent_path:
    return []
  if os.path.exists(parent_path):
    return lineage(parent_path)
  old = privacy.get('pretrained') or {}
  if not old.get('earlier_run'):
    return [{**_outside(parent_path), 'generation': 1}]
  return [{'path': parent_path, 'platform_run': True, 'generation': 1,
           'dataset': {'name': old.get('earlier_dataset')},  # path unknown
           'epsilon': old.get('earlier_epsilon'), 'delta': old.get('earlier_delta'),
           'non_private': bool(old.get('earlier_non_private'))}]


def lineage(path: str) -> list[dict[str, Any]]:
  """Every ancestor of the parameters at ``path``, nearest first: the run that wrote
  them (generation 1), then that run's own recorded ancestors (generation + 1),
  whatever data each trained on. Entries: path, platform_run (False: parameters from
  outside this platform, whose history is unknown), and for runs of this platform
  their dataset identity, own epsilon and delta, and non_private."""
  found = earlier_run_files(path)
  if found is None:
    return [{**_outside(path), 'generation': 1}]
  config, privacy = found
  older = _recorded_lineage(config, privacy)
  for entry in older:
    entry['generation'] = int(entry.get('generation', 1)) + 1
    entry.pop('composed', None)  # decided anew against each descendant's data
    entry.pop('assumption', None)
  return [{**_ancestor(path, config, privacy), 'generation': 1}] + older


def composition(path: str, data_config, compose: bool) -> dict:
  """What privacy.json records about the pre-trained parameters at ``path``.

  Privacy: parameters trained elsewhere on public data cost nothing. Parameters from
  an earlier DP run of this platform on the SAME private data are a release of that
  data, and so is every run further up the chain that trained on it, however many
  runs on other data lie between: their weights reach this run through the chain.
  Composition is therefore transitive. Every ancestor (``lineage``) is checked
  against this run's data; those on the same data compose with this run by basic
  composition (epsilons and deltas add: ``composed_total``), those on other data
  are assumed disjoint from it. Refused (PretrainedError) when a same-data ancestor
  trained without privacy, or unless ``compose``
  (config.privacy.compose_with_pretrained_run) accepts that the total is reported.

  Returns:
    {'path', 'assumption' (about the immediate parent), 'lineage': every ancestor
    with 'composed' (bool) and its 'assumption'}; for a parent that is a run of this
    platform also earlier_run, earlier_dataset, earlier_epsilon, earlier_delta and
    earlier_non_private (the parent's own figures).
  """
  ancestors = lineage(path)
  same = []
  for entry in ancestors:
    if not entry['platform_run']:
      entry.update(composed=False, assumption=(
          'not written by a run of this platform: assumed trained on public data (or '
          'data disjoint from this training set)'))
    elif _same_data(entry.get('dataset') or {}, data_config):
      entry.update(composed=True, assumption=(
          'trained on the same data: composed with this run (basic composition)'))
      same.append(entry)
    else:
      entry.update(composed=False, assumption=(
          f"trained on other data ({_describe(entry.get('dataset'))}): assumed "
          'disjoint from this training set'))
  for entry in same:
    if entry['non_private']:
      raise PretrainedError(
          f'config.model.pretrained_path={path!r} descends from {_which(entry)}, '
          f'which was trained WITHOUT privacy on the same dataset ({data_config.name}): '
          'fine-tuning from it can give no guarantee for that data. Start from '
          'parameters trained on public data')
    if entry.get('epsilon') is None or entry.get('delta') is None:
      raise PretrainedError(
          f'config.model.pretrained_path={path!r} descends from {_which(entry)}, '
          f'which trained on the same dataset ({data_config.name}) but whose run files '
          'record no epsilon or delta, so the total cannot be computed. Start from '
          'parameters trained on public data')
  if same and not compose:
    runs = '; '.join(f"{_which(e)}: epsilon={e['epsilon']}, delta={e['delta']}"
                     for e in same)
    raise PretrainedError(
        f'config.model.pretrained_path={path!r} comes from {len(same)} earlier DP '
        f'run(s) on the same dataset ({data_config.name}): {runs}. Fine-tuning again '
        'spends budget on the same examples, and the runs compose. Set '
        'config.privacy.compose_with_pretrained_run=True to train and report the total '
        '(basic composition: epsilons and deltas add up), or start from public '
        'parameters')
  parent = ancestors[0]
  record = {'path': path, 'assumption': parent['assumption'], 'lineage': ancestors}
  if parent['platform_run']:
    record.update(earlier_run=True, earlier_dataset=parent['dataset'].get('name'),
                  earlier_epsilon=parent.get('epsilon'),
                  earlier_delta=parent.get('delta'),
                  earlier_non_private=parent['non_private'])
  return record


def composed_total(ancestors: list[dict], epsilon: float, delta: float
                   ) -> tuple[float, float] | None:
  """(total epsilon, total delta) of this run and its composed ancestors by basic
  composition (each ancestor's OWN epsilon and delta, once each); None when no
  ancestor is composed."""
  composed = [a for a in ancestors if a.get('composed')]
  if not composed:
    return None
  return (epsilon + sum(a['epsilon'] for a in composed),
          delta + sum(a['delta'] for a in composed))


def _which(entry: Mapping) -> str:
  generation = int(entry.get('generation', 1))
  if generation == 1:
    return f"the run that trained it ({entry['path']!r})"
  return (f"the run {entry['path']!r} ({generation} generations up the fine-tuning "
          'chain)')


def _describe(dataset: Mapping | None) -> str:
  dataset = dataset or {}
  name = str(dataset.get('name'))
  return f"{name} at {dataset['path']}" if dataset.get('path') else name
