"""The evidence every run leaves in its workdir.

config.json    the resolved config
metrics.jsonl  one JSON object per logged step (step, epsilon, train_loss, ...)
privacy.json   the privacy plan and what was spent (see image_classification/plan.py)
privacy.md     the same for a human reviewer
summary.json   final figures; status 'complete' marks a finished run
plan.json      written by --dry_run instead of training
Files are written atomically (temp file + rename) so that a killed run never leaves
half a JSON file behind.
"""
import json
import math
import os
import tempfile

CONFIG = 'config.json'
METRICS = 'metrics.jsonl'
PRIVACY = 'privacy.json'
PRIVACY_MD = 'privacy.md'
SUMMARY = 'summary.json'
PLAN = 'plan.json'


def _clean(value):
  """JSON-safe: inf/nan become null, numpy scalars become Python.

  An infinite epsilon (a non-private run) is written as null; the run files say why
  with ``non_private: true``. JSON has no infinity, and a string 'inf' in a number
  field breaks every reader that expects a number or null.
  """
  if isinstance(value, dict):
    return {k: _clean(v) for k, v in value.items()}
  if isinstance(value, (list, tuple)):
    return [_clean(v) for v in value]
  if hasattr(value, 'item') and not isinstance(value, (str, bytes)):
    try:
      value = value.item()
    except (ValueError, AttributeError):
      pass
  if isinstance(value, float) and not math.isfinite(value):
    return None
  return value


def write_json(workdir: str, name: str, data: dict) -> str:
  os.makedirs(workdir, exist_ok=True)
  path = os.path.join(workdir, name)
  fd, tmp = tempfile.mkstemp(dir=workdir, prefix=f'.{name}.')
  with os.fdopen(fd, 'w') as f:
    json.dump(_clean(data), f, indent=2, sort_keys=True)
    f.write('\n')
  os.replace(tmp, path)
  return path


def read_json(workdir: str, name: str):
  with open(os.path.join(workdir, name)) as f:
    return json.load(f)


class MetricsWriter:
  """Appends rows to metrics.jsonl, flushing each so a killed run keeps its rows."""

  def __init__(self, workdir: str, truncate_after_step: int | None = None):
    os.makedirs(workdir, exist_ok=True)
    self.path = os.path.join(workdir, METRICS)
    if truncate_after_step is not None and os.path.exists(self.path):
      # A resumed run drops rows logged after its checkpoint; they will be redone.
      kept = []
      with open(self.path) as f:
        for line in f:
          try:
            row = json.loads(line)
          except json.JSONDecodeError:
            continue
          if row.get('step', 0) <= truncate_after_step:
            kept.append(line if line.endswith('\n') else line + '\n')
      with open(self.path, 'w') as f:
        f.writelines(kept)
    elif truncate_after_step is None and os.path.exists(self.path):
      os.remove(self.path)
    self._file = open(self.path, 'a')

  def write(self, row: dict) -> None:
    self._file.write(json.dumps(_clean(row), sort_keys=True) + '\n')
    self._file.flush()

  def close(self) -> None:
    self._file.close()


def privacy_markdown(privacy: dict, epsilon_rdp: float | None = None,
                     epsilon_pld: float | None = None) -> str:
  """A short report a reviewer can check by hand."""
  p = privacy
  lines = ['# Privacy report', '']
  if p.get('WARNING'):
    lines += [f"**{p['WARNING']}**", '']
  if p.get('non_private'):
    lines += ['**NON-PRIVATE RUN: no noise was added; this model has NO differential '
              'privacy guarantee.**', '']
  if p.get('large_delta'):
    lines += [f"**LARGE DELTA: delta = {p['delta']:.3g} is >= 1/N = "
              f"{1 / p['dataset_size']:.3g}; such a guarantee permits releasing a few "
              'training examples outright. It ran only because '
              'privacy.allow_large_delta=True.**', '']
  earlier = p.get('pretrained') or {}
  if p.get('pretrained_path') and not earlier.get('earlier_run'):
    lines += [f"- Fine-tuned from the pre-trained checkpoint `{p['pretrained_path']}`. "
              'The guarantee covers this run\'s training data only and assumes that '
              'checkpoint was trained on public data, disjoint from and independent of '
              'the private training set.', '']
  elif p.get('pretrained_path'):
    lines += [f"- Fine-tuned from `{p['pretrained_path']}`, trained by an earlier run of "
              f"this platform on {earlier.get('earlier_dataset')} (epsilon "
              f"{_fmt(earlier.get('earlier_epsilon'))}): {earlier['assumption']}.", '']
  bandmf = []
  if p.get('mechanism_name') == 'bandmf':
    coefs = ', '.join(f'{c:.4g}' for c in p.get('strategy_coefs', []))
    stds = p.get('noise_std_per_step') or []
    bandmf = [
        f"- BandMF: b = {p['num_bands']} bands; strategy: column-normalised banded "
        f"Toeplitz with coefficients [{coefs}] (jax-privacy optimize_banded_toeplitz for "
        f"{p['steps']} steps), sensitivity (max column norm) = "
        f"{p.get('strategy_sensitivity', 1.0):.4g}; each step's noise has std "
        f"sigma*C*sensitivity*||row t of C^-1|| per coordinate (privacy.json "
        f"noise_std_per_step: from {_fmt(stds[0] if stds else None)} at the first step "
        f"to {_fmt(stds[-1] if stds else None)} at the last), correlated over b steps.",
        f"- Participation: {p.get('participation', '')}. Accounted with jax-privacy's "
        f"amplified_bandmf_event: ceil(steps / b) rounds of the Poisson-subsampled "
        f"Gaussian mechanism (q, sigma).",
        "- The correlated-noise state (the last b-1 steps' noise) is secret: checkpoints "
        "hold it zeroed and a resume rebuilds it from the secret noise key."]
  lines += [
      f"- Mechanism: {p['mechanism']}.", *bandmf,
      f"- Sampler: {p['sampling']} (sampling rate q = {p['sampling_rate']:.6g}, expected "
      f"batch size {p['expected_batch_size']}, dataset size N = {p['dataset_size']}).",
      f"- Neighbouring relation: {p['neighboring_relation'].replace('_', '-')} "
      + ('(datasets differ by adding or removing one example; the clipped sum moves by '
         'at most C).' if p['neighboring_relation'] == 'add_or_remove_one' else
         '(datasets differ by replacing one example; the clipped sum moves by at most 2C, '
         'so the accountant is given sigma/2).'),
      f"- Noise multiplier sigma = {p['noise_multiplier']:.6g}; clipping norm C = "
      f"{p['clipping_norm']:.6g}; noise std per coordinate sigma*C = "
      f"{p['noise_multiplier'] * p['clipping_norm']:.6g}"
      + (' (BandMF: the std of each independent draw Z_t before correlation).'
         if p.get('mechanism_name') == 'bandmf' else '.'),
      f"- Randomness: {p.get('randomness', 'not recorded')}.",
      f"- Steps: {p.get('steps_taken', p['steps'])} taken of {p['steps']} planned.",
      f"- delta = {p['delta']:.3g}; epsilon = {_fmt(p.get('epsilon'))} "
      f"({p['accountant'].upper()} accountant, the one the run enforces).",
  ]
  if epsilon_rdp is not None or epsilon_pld is not None:
    lines.append(f'- Cross-check at the same delta: epsilon under RDP = '
                 f'{_fmt(epsilon_rdp)}, under PLD = {_fmt(epsilon_pld)}.')
  if p.get('total_epsilon_with_pretrained') is not None:
    lines.append(
        f"- **Total with the earlier run on the same data** (basic composition): "
        f"epsilon = {_fmt(p['total_epsilon_with_pretrained'])}, delta = "
        f"{p['total_delta_with_pretrained']:.3g}.")
  lines += [
      '- Computed from private data WITHOUT noise (not covered by the guarantee): '
      + ', '.join(p.get('computed_without_noise', [])) + '.',
      '- ' + p.get('evaluation_data', 'Test accuracy is computed on the held-out '
                   'evaluation split, not on training data.'), '']
  return '\n'.join(lines)


def _fmt(x) -> str:
  if x is None or x == 'inf' or (isinstance(x, float) and not math.isfinite(x)):
    return 'n/a' if x is None else 'inf'
  return f'{x:.4g}'
