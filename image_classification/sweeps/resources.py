"""What each point's job asks the scheduler for, and where each value came from.

A value comes from launch.py's flag when given, else from the sweep file's optional
``get_resources()`` (a dict with the keys below), else from the default; ``describe``
says which for each. The sweep file's dict, e.g.::

  def get_resources():
    return {'partition': 'gpu', 'gpus': 8, 'cpus': 64, 'time_minutes': 720,
            'slurm': {'account': 'my_project', 'qos': 'high'},
            'setup': ['module load cuda/12.4']}

  key            flag                  meaning (one point = one job on one node)
  partition      --sweep_partition     the Slurm partition (default: the cluster's)
  gpus           --sweep_gpus          GPUs per point (Slurm default 1; local: the GPUs
                                       this process sees, unless given)
  cpus           --sweep_cpus          CPU cores per point (default: the cluster's)
  time_minutes   --sweep_time_minutes  time limit per point; required on Slurm (a job
                                       that reaches it is requeued and resumes)
  mem_gb         --sweep_mem_gb        memory per point (default: the cluster's)
  parallelism    --sweep_parallelism   points running at once (Slurm default: all;
                                       local default: 1)
  slurm          --sweep_slurm=K=V,..  further sbatch parameters (account, qos,
                                       constraint, ...), merged key by key, flags win
  setup          (sweep file only)     shell lines run before each point's job
"""
import dataclasses
from typing import Any, Mapping, Optional, Sequence

from image_classification.sweeps.points import SweepError

FLAGS = {'partition': 'sweep_partition', 'gpus': 'sweep_gpus', 'cpus': 'sweep_cpus',
         'time_minutes': 'sweep_time_minutes', 'mem_gb': 'sweep_mem_gb',
         'parallelism': 'sweep_parallelism', 'slurm': 'sweep_slurm', 'setup': None}
_POSITIVE = ('cpus', 'time_minutes', 'mem_gb', 'parallelism')


@dataclasses.dataclass(frozen=True)
class Resources:
  """The resolved values (None: not set) and, per key, where each came from."""
  values: dict[str, Any]
  sources: dict[str, str]

  def __getitem__(self, key: str) -> Any:
    return self.values.get(key)


def parse_slurm_flag(entries: Optional[Sequence[str]]) -> dict[str, str]:
  """--sweep_slurm=account=abc,qos=high -> {'account': 'abc', 'qos': 'high'}."""
  out = {}
  for entry in entries or []:
    key, sep, value = entry.partition('=')
    if not sep or not key.strip():
      raise SweepError(f'--sweep_slurm entry {entry!r}: write KEY=VALUE, e.g. '
                       '--sweep_slurm=account=my_project,qos=high')
    out[key.strip().replace('_', '-')] = value.strip()
  return out


def _check(key: str, value: Any, where: str) -> Any:
  """``value`` of ``key`` if it has the right type and range; SweepError otherwise."""
  if key == 'partition':
    ok = isinstance(value, str) and value.strip()
  elif key == 'gpus':
    ok = isinstance(value, int) and not isinstance(value, bool) and value >= 0
  elif key == 'mem_gb':
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0
  elif key in _POSITIVE:
    ok = isinstance(value, int) and not isinstance(value, bool) and value > 0
  elif key == 'slurm':
    ok = isinstance(value, Mapping) and all(isinstance(k, str) for k in value)
    value = {k.replace('_', '-'): v for k, v in value.items()} if ok else value
  else:  # setup
    ok = (isinstance(value, Sequence) and not isinstance(value, str)
          and all(isinstance(line, str) for line in value))
    value = list(value) if ok else value
  if not ok:
    kind = {'partition': 'a partition name', 'gpus': 'an integer >= 0',
            'mem_gb': 'a positive number', 'slurm': 'a dict of sbatch parameters',
            'setup': 'a list of shell lines'}.get(key, 'a positive integer')
    raise SweepError(f'{where}: {key}={value!r} must be {kind}')
  return value


def resolve(flag_values: Mapping[str, Any], file_values: Optional[Mapping[str, Any]],
            sweep_path: str, executor: str) -> Resources:
  """The resources of ``executor``'s ('slurm' or 'local') jobs.

  Args:
    flag_values: resource key -> the flag's value (None: flag not given); 'slurm'
      holds the parsed --sweep_slurm dict.
    file_values: the sweep file's get_resources() (None: it has none).

  Raises:
    SweepError: an unknown key in get_resources(), a value of the wrong type, or no
      time limit for Slurm; the message names the key and where it was set.
  """
  file_values = dict(file_values or {})
  where_file = f'sweep file {sweep_path!r}, get_resources()'
  unknown = sorted(set(file_values) - set(FLAGS))
  if unknown:
    raise SweepError(f'{where_file}: unknown key(s) {unknown}; known: {sorted(FLAGS)}')
  values, sources = {}, {}
  for key, flag in FLAGS.items():
    if key == 'slurm':
      continue
    if flag and flag_values.get(key) is not None:
      values[key], sources[key] = _check(key, flag_values[key], f'--{flag}'), f'--{flag}'
    elif file_values.get(key) is not None:
      values[key], sources[key] = _check(key, file_values[key], where_file), 'sweep file'
  slurm = {}
  for key, value in _check('slurm', file_values.get('slurm') or {}, where_file).items():
    slurm[key], sources[f'slurm.{key}'] = value, 'sweep file'
  for key, value in (flag_values.get('slurm') or {}).items():
    slurm[key], sources[f'slurm.{key}'] = value, '--sweep_slurm'
  values['slurm'] = slurm
  defaults = {'slurm': {'gpus': 1}, 'local': {'parallelism': 1}}.get(executor, {})
  for key, value in defaults.items():
    if key not in values:
      values[key], sources[key] = value, 'default'
  if executor == 'slurm' and 'time_minutes' not in values:
    raise SweepError('--sweep_executor=slurm needs a time limit per point: '
                     '--sweep_time_minutes=N, or time_minutes in the sweep file\'s '
                     'get_resources() (a point that reaches it is requeued and resumes)')
  return Resources(values, sources)


def describe(resources: Resources) -> str:
  """One line: each value set and where it came from."""
  parts = []
  for key in FLAGS:
    if key == 'slurm':
      parts += [f'{k}={v} ({resources.sources[f"slurm.{k}"]})'
                for k, v in resources['slurm'].items()]
    elif resources[key] is not None:
      parts.append(f'{key}={resources[key]} ({resources.sources[key]})')
  return ', '.join(parts) or 'the scheduler\'s defaults'
