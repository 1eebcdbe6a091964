"""The resume policy: which workdir a run may continue, and what must not have changed.

What a resumed run needs, and why restoring the step is enough:
- params, frozen, opt_state (momentum, the schedule's count), ema_params and step are
  in the checkpoint (workdir/checkpoint_store.py). BandMF's correlated-noise state
  (the last b-1 steps' noise, privacy/bandmf.py) is secret and is saved ZEROED
  (``privatizers.publishable``); a resume rebuilds it from the secret noise key
  (``privatizers.replay``). The metadata records the strategy's coefficients, and a
  resume with other coefficients is refused.
- The batch of step t is ``plan.batch_selection(seed).indices(t)``, a pure function
  of (the run's secret sampling seed, t); its noise key is ``noise.step_noise_key(noise_key,
  t)``, a pure function of (the run's secret noise key, t). Both secrets live in
  WORKDIR/mechanism_secret.json (workdir/secret_file.py), which a resume reads;
  neither is in the checkpoint or its metadata. The metadata names the noise
  generator (``noise_generator``: threefry4x32 for a secret's 128-bit key), and a
  resume with another one is refused: a checkpoint of a version that drew the noise
  from a 64-bit threefry2x32 key (absent field) would otherwise continue with another
  noise stream, and BandMF would rebuild a noise state that never ran.
- The augmentation and dropout keys of step t are ``dp_step.example_keys(augment_key,
  t, ...)``, where augment_key is derived from the same secret (a pure function of the
  secret and t; it must be secret, docs/privacy.md invariant 18).
- The privacy ledger is ``plan.ledger().epsilon(t)``, a pure function of
  (plan, t).
So restoring the step restores the data order, the keys and the spent budget. Each
checkpoint's metadata (``make_metadata``) also records the seed, the step, the epsilon
spent so far and the privacy plan (noise multiplier, sampling, steps, ...), and a
resume refuses to continue when they disagree with the new run (``check_resume``); a
workdir holding a run of another config is refused too (``check_config``).

Privacy semantics:
- A resume never resets the ledger: after resuming at step t the run reports
  epsilon(t + steps taken since), i.e. it counts every step before the checkpoint.
- The noise key of step t is only ever used for step t. A run killed at step t' after
  its last checkpoint t recomputes steps t+1..t' with the same keys, the same batches
  and the same noise. That is fine: those outputs were never released (no checkpoint,
  no summary; their metrics rows are dropped), and on the same hardware the
  recomputation is bit-identical, so no step's noise is ever combined with a second,
  independent draw. The ledger counts each step once.
- Every checkpoint is itself a release of the noisy iterate at its step (params, EMA
  and optimizer state are post-processing of the noisy gradients), covered by the
  epsilon recorded in its metadata. It is NOT a release of anything computed without
  noise.
"""
import json
import math
import os
import time
from typing import Callable

import ml_collections

from image_classification import plan as plan_lib
from image_classification.workdir import run_files
from image_classification.privacy import mechanism_secret
from image_classification.privacy import noise
from image_classification.workdir import checkpoint_store

# Config fields (dotted prefixes) that do not change what a run computes: a workdir
# may be resumed with different values for them.
IGNORED_CONFIG_FIELDS = (
    'wandb',
    'training.log_every_steps',
    'training.eval_every_steps',
    'training.eval_batch_size',
    'training.checkpoint_every_steps',
    'training.checkpoint_every_minutes',
    'data.prefetch',
    'data.num_workers',
    # Examples per device per pass: memory only. The clipped sum, the noise and the
    # ledger are the same (the sum's float rounding may differ), so a run that ran
    # out of memory resumes with a smaller one (training/resources.py).
    'training.micro_batch_size',
)

# Fields added after some workdirs were written: absent from an older config.json
# and at this value now is no difference (the run computes the same thing).
ADDED_CONFIG_FIELDS = {'data.validation_fraction': 0.0,
                       'training.compute_dtype': 'float32',
                       'training.select_on_validation': False,
                       'model.features_shift': 0}

# Resume fields (plan_lib.RESUME_FIELDS) absent from older checkpoints, and what
# they meant by them (DP-SGD has no strategy).
_PLAN_DEFAULTS = {'mechanism_name': 'dpsgd', 'num_bands': 1}

# The noise generator of checkpoints written before the metadata named it: every run
# then drew its noise from a 64-bit threefry2x32 key (privacy/noise.py).
_LEGACY_NOISE_GENERATOR = 'threefry2x32'


def noise_generator(plan) -> str:
  """The generator the plan's run draws its noise from (privacy/noise.py)."""
  return noise.generator(2 if plan.insecure_seeded_noise
                         else mechanism_secret.NOISE_KEY_WORDS)


# ---------------------------------------------------------------------- metadata
def make_metadata(seed: int, step: int, epsilon: float, plan) -> dict:
  """What a resume checks: seed, step, epsilon spent after ``step`` steps, the plan."""
  plan_json = plan.to_json()
  return {'seed': int(seed), 'step': int(step), 'epsilon': _number(epsilon),
          'noise_multiplier': float(plan.noise_multiplier),
          'noise_generator': noise_generator(plan),
          'plan': {k: plan_json[k] for k in plan_lib.RESUME_FIELDS if k in plan_json},
          'time': time.strftime('%Y-%m-%d %H:%M:%S')}


def _number(x):
  """JSON-safe float: inf is stored as the string 'inf' (non-private runs)."""
  x = float(x)
  return x if math.isfinite(x) else str(x)


def _close(a, b, rel=1e-6) -> bool:
  if isinstance(a, (int, float, str)) and isinstance(b, (int, float, str)) and \
      not isinstance(a, bool) and not isinstance(b, bool):
    try:
      fa, fb = float(a), float(b)
    except ValueError:
      return a == b
    if math.isinf(fa) or math.isinf(fb):
      return fa == fb
    return math.isclose(fa, fb, rel_tol=rel, abs_tol=1e-12)
  return a == b


# Why a plan field may have changed, where the cause is not the config.
_HINTS = {
    'dataset_size': (
        ' (the training split holds other records: the data under config.data.path '
        'changed, or the run started before in-memory validation splits were keyed on '
        'each record as loaded rather than as resized to config.data.image_size)'),
}


def check_resume(metadata: dict, seed: int, plan, epsilon_at: Callable[[int], float]
                 ) -> None:
  """Refuses a resume whose checkpoint disagrees with the new run's seed or plan.

  The data order, keys and ledger are functions of the run's secret, the seed, the
  step and the plan: a
  different seed, noise multiplier, sampling or number of steps would silently change
  the mechanism halfway, and a different ledger value would misreport epsilon.
  """
  problems = []
  if metadata.get('seed') != seed:
    problems.append(f'seed: {metadata.get("seed")} in the checkpoint, {seed} now')
  generator = metadata.get('noise_generator', _LEGACY_NOISE_GENERATOR)
  if generator != noise_generator(plan):
    problems.append(f'noise generator: {generator} in the checkpoint (written by an '
                    f'earlier version), {noise_generator(plan)} now (the noise stream '
                    'would change halfway; finish the run with the version that '
                    'started it)')
  new_plan = plan.to_json()
  for k in plan_lib.RESUME_FIELDS:
    old = metadata.get('plan', {}).get(k, _PLAN_DEFAULTS.get(k))
    if not _close(old, new_plan.get(k)):
      problems.append(f'plan.{k}: {old!r} in the checkpoint, {new_plan.get(k)!r} now'
                      + _HINTS.get(k, ''))
  step = int(metadata['step'])
  if not problems and not _close(metadata.get('epsilon'), _number(epsilon_at(step))):
    problems.append(f'epsilon after {step} steps: {metadata.get("epsilon")} in the '
                    f'checkpoint, {epsilon_at(step)} from the ledger now')
  if problems:
    raise checkpoint_store.CheckpointError(
        'the checkpoint does not match this run\'s privacy plan, so resuming would '
        'change the mechanism or the ledger halfway: ' + '; '.join(problems) +
        '. Use another --workdir, or delete the old one to start over.')


# ---------------------------------------------------------------------- config
def flatten(d: dict, prefix: str = '') -> dict:
  """{'a': {'b': 1}} -> {'a.b': 1}; an empty dict stays a leaf."""
  out = {}
  for k, v in d.items():
    key = f'{prefix}{k}'
    if isinstance(v, dict) and v:
      out.update(flatten(v, key + '.'))
    else:
      out[key] = v
  return out


def _ignored(field: str) -> bool:
  return any(field == f or field.startswith(f + '.') for f in IGNORED_CONFIG_FIELDS)


def config_differences(saved: dict, config: ml_collections.ConfigDict) -> list[str]:
  """'field: saved vs new' for every field that changes the result."""
  # Compare as config.json stores it (tuples become lists, inf becomes 'inf').
  clean = run_files.json_safe
  new = json.loads(json.dumps(clean(config.to_dict())))
  old, new = flatten(saved), flatten(new)
  diffs = []
  for field in sorted(set(old) | set(new)):
    if _ignored(field):
      continue
    if field not in old and ADDED_CONFIG_FIELDS.get(field, object()) == new[field]:
      continue
    if field not in old:
      diffs.append(f'config.{field}: absent in the workdir, {new[field]!r} now')
    elif field not in new:
      diffs.append(f'config.{field}: {old[field]!r} in the workdir, absent now')
    elif old[field] != new[field]:
      diffs.append(f'config.{field}: {old[field]!r} in the workdir, {new[field]!r} now')
  return diffs


def check_config(workdir: str, config: ml_collections.ConfigDict) -> None:
  """Refuses a workdir that holds a run of a different config (naming the fields)."""
  path = os.path.join(workdir, run_files.CONFIG)
  if not os.path.exists(path):
    return
  saved = run_files.read_json(workdir, run_files.CONFIG)
  diffs = config_differences(saved, config)
  if diffs:
    raise checkpoint_store.CheckpointError(
        f'--workdir={workdir} holds a run with a different config ({path}): '
        + '; '.join(diffs) + '. Use another --workdir, or delete this one to start over.')


def completed_summary(workdir: str) -> dict | None:
  """summary.json's content if the workdir holds a finished run, else None."""
  try:
    summary = run_files.read_json(workdir, run_files.SUMMARY)
  except (OSError, ValueError):
    return None
  return summary if summary.get('status') == 'complete' else None
