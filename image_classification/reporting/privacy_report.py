"""privacy.md: the privacy report of one run, for a human reviewer.

It renders what privacy.json holds (the plan, the spent epsilon, the neighbouring
relation, the randomness, what was computed without noise, the fine-tuning lineage);
it computes nothing. Every epsilon and delta is rounded UP (reporting/round_up.py).
"""
from image_classification.reporting import round_up

# After a test accuracy measured on an evaluation split carved out of the private
# training data (an image folder without test/): released without noise, not covered by
# the guarantee (docs/privacy.md, invariant 8). Every console line and table says so.
PRIVATE_TEST_LABEL = ' (private data, no noise)'


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
    lines += [f"**LARGE DELTA: delta = {_delta(p['delta'])} is >= 1/N = "
              f"{1 / p['dataset_size']:.3g}; such a guarantee permits releasing a few "
              'training examples outright. It ran only because '
              'privacy.allow_large_delta=True.**', '']
  lines += _fine_tuning(p)
  if p.get('public_prior'):
    lines.append(f"- Public prior: {p['public_prior']}. Every image (training, "
                 'validation and test) is replaced by these features before training; '
                 'each example\'s features depend on that example alone, so computing '
                 'them spends no privacy, and the model trained on them is clipped '
                 'per example as usual.')
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
      '- N (the size of the training split) and the sampling rate q = B/N are treated '
      'as public, the usual convention under add/remove-one adjacency: the guarantee '
      'hides whether any one example is in the data, not how many examples there are '
      '(N is printed on the console and in plan.json).',
      _coverage(p),
      f"- Noise multiplier sigma = {p['noise_multiplier']:.6g}; clipping norm C = "
      f"{p['clipping_norm']:.6g}; noise std per coordinate sigma*C = "
      f"{p['noise_multiplier'] * p['clipping_norm']:.6g}"
      + (' (BandMF: the std of each independent draw Z_t before correlation).'
         if p.get('mechanism_name') == 'bandmf' else '.'),
      f"- Randomness: {p.get('randomness', 'not recorded')}.",
      f"- Steps: {p.get('steps_taken', p['steps'])} taken of {p['steps']} planned.",
      f"- delta = {_delta(p['delta'])}; epsilon = {_fmt(p.get('epsilon'))} "
      f"({p['accountant'].upper()} accountant, the one the run enforces).",
  ]
  if epsilon_rdp is not None or epsilon_pld is not None:
    lines.append(f'- Cross-check at the same delta: epsilon under RDP = '
                 f'{_fmt(epsilon_rdp)}, under PLD = {_fmt(epsilon_pld)}.')
  if 'total_epsilon_with_pretrained' in p:
    composed = sum(1 for a in p.get('lineage') or [] if a.get('composed')) or 1
    lines.append(
        f"- **Total with the {composed} earlier run(s) on the same data** (basic "
        f"composition: this run's epsilon and delta plus each composed ancestor's "
        f"own): epsilon = {_fmt(p['total_epsilon_with_pretrained'])}, delta = "
        f"{_delta(p.get('total_delta_with_pretrained'))}. This total, not the run's "
        'own epsilon, is the guarantee for that data.')
  selected = p.get('selected_on_validation')
  if selected:
    lines.append(
        f"- Exported parameters: those of step {selected['step']} (of "
        f"{selected.get('final_step', p.get('steps_taken'))}), the evaluation with the "
        'best validation accuracy (training.select_on_validation). For the training '
        'data this choice is post-processing of the noisy iterates, which the '
        'accountant charges as if every one were released: it costs no privacy and '
        'the epsilon above covers the exported parameters. '
        'The validation accuracy that made the choice is computed on private '
        'held-out data WITHOUT noise: the choice, the selected step and that accuracy '
        'are not covered by the guarantee for the validation records.')
  lines += [
      '- Computed from private data WITHOUT noise (not covered by the guarantee): '
      + ', '.join(p.get('computed_without_noise', [])) + '.',
      '- ' + p.get('evaluation_data', 'Test accuracy is computed on the held-out '
                   'evaluation split, not on training data.'), '']
  return '\n'.join(lines)


def _fine_tuning(p: dict) -> list[str]:
  """Where the initial parameters came from: every ancestor, composed or assumed
  disjoint (trained/pretrained.py)."""
  if not p.get('pretrained_path'):
    return []
  lineage = p.get('lineage')
  if lineage is None:  # written before lineages were recorded
    earlier = p.get('pretrained') or {}
    lineage = ([{'path': p['pretrained_path'], 'platform_run': True, 'generation': 1,
                 'dataset': {'name': earlier.get('earlier_dataset')},
                 'epsilon': earlier.get('earlier_epsilon'),
                 'delta': earlier.get('earlier_delta'),
                 'non_private': earlier.get('earlier_non_private'),
                 'composed': 'total_epsilon_with_pretrained' in p}]
               if earlier.get('earlier_run') else [])
  if not any(a.get('platform_run') for a in lineage):
    return [f"- Fine-tuned from the pre-trained checkpoint `{p['pretrained_path']}`. "
            'The guarantee covers this run\'s training data only and assumes that '
            'checkpoint was trained on public data, disjoint from and independent of '
            'the private training set.', '']
  lines = [f"- Fine-tuned from `{p['pretrained_path']}`. Its lineage (every run whose "
           'parameters reach this one through the chain of fine-tuning, nearest '
           'first; generation 1 is the parent):']
  for a in lineage:
    where = f"  - generation {a.get('generation', 1)}: `{a['path']}`"
    if not a.get('platform_run'):
      lines.append(f'{where}, not written by a run of this platform: assumed trained on '
                   'public data, disjoint from and independent of the private training '
                   'set.')
      continue
    dataset = a.get('dataset') or {}
    data = dataset.get('name') or 'unknown data'
    if dataset.get('path'):
      data += f" at {dataset['path']}"
    figures = ('without privacy' if a.get('non_private') else
               f"epsilon = {_fmt(a.get('epsilon'))}, delta = {_delta(a.get('delta'))}")
    lines.append(f'{where}, trained on {data} ({figures}): '
                 + ('the same data as this run: **composed** with it.'
                    if a.get('composed') else
                    'other data: **assumed disjoint** from this training set, not '
                    'composed.'))
  return lines + ['']


def _coverage(p: dict) -> str:
  """What data the guarantee is about, given the held-out splits."""
  held = [name for name, present in (
      ('a validation split', p.get('validation_size')),
      ('an evaluation split', p.get('evaluation_data'))) if present]
  text = ('- What the guarantee covers: the data you supplied, under the neighbouring '
          'relation above.')
  if held:
    text += (f" {' and '.join(held).capitalize()} {'were' if len(held) > 1 else 'was'} "
             'held out of it, each record by a keyed hash of its own stable identifier '
             '(its file path or its content): the training split is a per-record function of your data, so adding or '
             'removing one record adds or removes at most that record in the training '
             'split and moves no other.')
    if p.get('neighboring_relation') != 'add_or_remove_one':
      text += (' Under replace-one adjacency, replacing a record can move it to the '
               'other side (the training split then gains or loses one record), which '
               'the fixed-size accountant does not cover: the guarantee is for the '
               'training split as split.')
  return text


def _fmt(x) -> str:
  """An epsilon, rounded up to 4 significant digits."""
  return 'inf' if x == 'inf' else round_up.round_up(x, 4)


def _delta(x) -> str:
  """A delta, rounded up to 3 significant digits."""
  return round_up.round_up(x, 3)
