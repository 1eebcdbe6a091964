"""The mechanism that runs is the one the accountant assumes, checked end to end through
``loop.train`` (the function launch.py calls), not through the building blocks.

- Noise: a block of parameters that no loss reads (tests/training/wiring_helpers.py's
  probe model) ends the run holding only the applied noise; its std must be
  lr x sigma x C x sqrt(T) / B with sigma, C, B, T read from privacy.json.
- Sampling: the indices the trainer really reads (a wrapper around its data source)
  have the inclusion rate q = B / N of privacy.json, and metrics.jsonl's
  realized_batch_size agrees with them.
- Accounting: privacy.json's epsilon equals dp-accounting's, rebuilt here from the
  steps observed and the sampler and noise measured.
Statistical checks use fresh noise and batches (no dependence on seeds): each
tolerance is at least 5 standard errors from the truth and from the planted errors
listed in docs/testing.md.
"""
import math

import numpy as np
import pytest

from image_classification.privacy import batch_selection
from image_classification.reporting.round_up import round_up
from image_classification.training import loop
from tests.training import wiring_helpers as wh


def _probe_noise_std_check(workdir, config, rel):
  privacy = wh.read_json(workdir, 'privacy.json')
  sigma, clip = privacy['noise_multiplier'], privacy['clipping_norm']
  b, steps = privacy['expected_batch_size'], privacy['steps_taken']
  lr = config.training.optimizer.learning_rate
  probe = np.asarray(wh.final_state(workdir)['params']['probe'], np.float64)
  expected = lr * sigma * clip * math.sqrt(steps) / b
  assert probe.size >= 40000
  # The std of n normals has relative standard error 1/sqrt(2n) (0.35% at 40000).
  assert np.std(probe) == pytest.approx(expected, rel=rel)
  assert abs(np.mean(probe)) < 6 * expected / math.sqrt(probe.size)
  return sigma, privacy


def test_trained_noise_std_is_lr_sigma_c_over_b_and_epsilon_is_what_ran(tmp_path):
  """Noise std within 2% (a 5% error is > 8 standard errors away), and epsilon
  recomputed from the steps the trainer took and the sigma it applied."""
  n, b, steps, sigma = 256, 64, 4, 2.0
  data = wh.random_splits(n)
  config = wh.make_config(batch_size=b, steps=steps, sigma=sigma, clip=1.0, lr=0.5,
                          probe_size=60000)
  workdir = str(tmp_path)
  summary = loop.train(config, workdir, dataset=data)
  used_sigma, privacy = _probe_noise_std_check(workdir, config, rel=0.02)
  # What ran: steps = number of batches the trainer read (no overflow at this size).
  steps_run = len(data.train.calls)
  assert steps_run == steps == privacy['steps_taken'] == summary['steps']
  assert used_sigma == sigma  # the probe std matched this sigma to 2%
  eps = wh.reference_epsilon(sigma=sigma, n=n, b=b, steps=steps_run, delta=1e-5)
  assert privacy['epsilon'] == pytest.approx(eps, rel=1e-6)
  assert summary['epsilon'] == pytest.approx(eps, rel=1e-6)
  assert privacy['epsilon_rdp'] == pytest.approx(eps, rel=1e-6)
  eps_pld = wh.reference_epsilon(sigma=sigma, n=n, b=b, steps=steps_run, delta=1e-5,
                                 accountant='pld')
  assert privacy['epsilon_pld'] == pytest.approx(eps_pld, rel=1e-6)
  rows = wh.read_metrics(workdir)
  assert [r['step'] for r in rows] == list(range(1, steps + 1))
  for r in rows:
    assert r['epsilon'] == pytest.approx(
        wh.reference_epsilon(sigma=sigma, n=n, b=b, steps=r['step'], delta=1e-5),
        rel=1e-6)


def test_poisson_sampling_rate_and_inclusion_through_the_trainer(tmp_path):
  """Over 1500 steps with N=50, B=45 (q=0.9): the mean realised batch size and each
  example's inclusion frequency are q. The standard error of the mean size is 0.12%;
  the tolerance 0.95% is 8 of them from the truth and from a 2% error in q (e.g.
  q = B / (N + 1), 1.96% low)."""
  n, b, steps = 50, 45, 1500
  data = wh.random_splits(n)
  config = wh.make_config(batch_size=b, steps=steps, sigma=30.0, clip=1e6)
  workdir = str(tmp_path)
  loop.train(config, workdir, dataset=data)
  privacy = wh.read_json(workdir, 'privacy.json')
  q, size = privacy['sampling_rate'], privacy['dataset_size']
  assert size == n and q == pytest.approx(b / n) and privacy['sampling'] == 'poisson'
  rows = wh.read_metrics(workdir)
  assert [r['step'] for r in rows] == list(range(1, steps + 1))
  realized = np.array([r['realized_batch_size'] for r in rows])
  assert np.all(realized == np.round(realized))
  assert np.mean(realized) == pytest.approx(q * size, rel=0.0095)
  # Poisson, not fixed: the size varies with variance N q (1 - q) (4.5 here; the
  # sample variance of 1500 steps has a relative standard error of 4%).
  assert np.var(realized) == pytest.approx(size * q * (1 - q), rel=0.25)
  # The indices the trainer actually read agree with the metrics, and every example
  # is included at rate q.
  drawn = wh.drawn_indices(data.train.calls, realized)
  counts = np.zeros(n)
  for idx in drawn:
    assert len(np.unique(idx)) == len(idx) and np.all((idx >= 0) & (idx < n))
    counts[idx] += 1
  freq = counts / steps
  assert np.mean(freq) == pytest.approx(q, rel=0.0095)
  sd = math.sqrt(q * (1 - q) / steps)
  assert np.max(np.abs(freq - q)) < 5 * sd
  # Independent inclusions: the spread of the counts is binomial. Their sample
  # variance over 50 examples is chi-square(49)/49 around T q (1 - q): the bounds
  # 0.3x and 2.2x are 4.5 standard deviations out (an all-or-nobody sampler gives
  # about T x that).
  ratio = np.var(counts, ddof=1) / (steps * q * (1 - q))
  assert 0.3 < ratio < 2.2
  # And clip_fraction is 0 with C = 1e6 (every gradient is far below it).
  assert all(r['clip_fraction'] == 0.0 for r in rows)
  assert all(r['nonfinite_gradients'] == 0 for r in rows)


def test_fixed_size_sampling_and_replace_one_accounting(tmp_path):
  """sampling='fixed' through the trainer: exactly B distinct indices every step,
  each example at rate B / N, accounted as sampling without replacement under
  replace-one with sigma / 2; no PLD figure (dp-accounting has none for it)."""
  n, b, steps, sigma = 40, 10, 120, 3.0
  data = wh.random_splits(n)
  config = wh.make_config(batch_size=b, steps=steps, sigma=sigma, sampling='fixed',
                          log_every=5)
  workdir = str(tmp_path)
  summary = loop.train(config, workdir, dataset=data)
  rows = wh.read_metrics(workdir)
  assert all(r['realized_batch_size'] == b for r in rows)
  assert len(data.train.calls) == steps
  counts = np.zeros(n)
  for idx in data.train.calls:
    assert len(idx) == b and len(np.unique(idx)) == b
    counts[idx] += 1
  sd = math.sqrt((b / n) * (1 - b / n) / steps)
  assert np.max(np.abs(counts / steps - b / n)) < 5 * sd
  privacy = wh.read_json(workdir, 'privacy.json')
  assert privacy['neighboring_relation'] == 'replace_one'
  eps = wh.reference_epsilon(sigma=sigma, n=n, b=b, steps=len(data.train.calls),
                             delta=1e-5, sampling='fixed')
  assert privacy['epsilon'] == pytest.approx(eps, rel=1e-6)
  assert summary['epsilon'] == pytest.approx(eps, rel=1e-6)
  assert privacy['epsilon_rdp'] == pytest.approx(eps, rel=1e-6)
  assert privacy['epsilon_pld'] is None
  with open(f'{workdir}/privacy.md') as f:
    text = f.read()
  assert 'replace-one' in text and 'sigma/2' in text
  # privacy.md prints epsilon rounded UP (25.841... -> 25.85), never to nearest.
  assert f'epsilon = {round_up(eps, 4)}' in text


def test_pld_accountant_run_reports_pld_and_rdp_cross_check(tmp_path):
  n, b, steps, sigma = 100, 20, 6, 1.5
  data = wh.random_splits(n)
  config = wh.make_config(batch_size=b, steps=steps, sigma=sigma, accountant='pld')
  workdir = str(tmp_path)
  summary = loop.train(config, workdir, dataset=data)
  eps_pld = wh.reference_epsilon(sigma=sigma, n=n, b=b, steps=len(data.train.calls),
                                 delta=1e-5, accountant='pld')
  eps_rdp = wh.reference_epsilon(sigma=sigma, n=n, b=b, steps=len(data.train.calls),
                                 delta=1e-5, accountant='rdp')
  privacy = wh.read_json(workdir, 'privacy.json')
  assert privacy['accountant'] == 'pld'
  assert privacy['epsilon'] == pytest.approx(eps_pld, rel=1e-6)
  assert summary['epsilon'] == pytest.approx(eps_pld, rel=1e-6)
  assert privacy['epsilon_pld'] == pytest.approx(eps_pld, rel=1e-6)
  assert privacy['epsilon_rdp'] == pytest.approx(eps_rdp, rel=1e-6)
  assert eps_pld < eps_rdp  # PLD is tighter: the two figures are not the same number
  rows = wh.read_metrics(workdir)
  assert rows[-1]['epsilon'] == pytest.approx(eps_pld, rel=1e-6)
  with open(f'{workdir}/privacy.md') as f:
    text = f.read()
  assert (f'epsilon under RDP = {round_up(eps_rdp, 4)}, '
          f'under PLD = {round_up(eps_pld, 4)}') in text
  assert 'PLD accountant' in text and 'add-or-remove-one' in text


def test_poisson_overflow_chunks_in_the_real_loop(tmp_path, monkeypatch):
  """A batch larger than the padded capacity is read in several chunks; all of it is
  used (realized_batch_size counts every chunk) and noise is still added once (the
  probe's std would grow by sqrt(#chunks) if each chunk were noised)."""
  real_capacity = batch_selection.PoissonSampling.capacity
  monkeypatch.setattr(batch_selection.PoissonSampling, 'capacity',
                      lambda self, multiple_of: min(16, real_capacity(self, multiple_of)))
  n, b, steps = 256, 64, 3
  data = wh.random_splits(n)
  config = wh.make_config(batch_size=b, steps=steps, sigma=2.0, probe_size=40000)
  workdir = str(tmp_path)
  loop.train(config, workdir, dataset=data)
  rows = wh.read_metrics(workdir)
  realized = [r['realized_batch_size'] for r in rows]
  assert len(data.train.calls) == sum(math.ceil(r / 16) for r in realized) > 3 * steps
  assert all(len(c) == 16 for c in data.train.calls)
  for idx in wh.drawn_indices(data.train.calls, realized):
    assert len(np.unique(idx)) == len(idx)
  _probe_noise_std_check(workdir, config, rel=0.03)


def test_nonfinite_gradients_and_clip_fraction_in_metrics(tmp_path):
  """Examples 0-9 have NaN pixels: each step's nonfinite_gradients is the number of
  them the trainer drew, realized_batch_size counts the others, and with C = 1e-6
  every finite example is clipped (clip_fraction 1)."""
  n, b, steps = 40, 20, 8
  rng = np.random.default_rng(1)
  images = rng.integers(0, 256, (n, 2, 2, 1)).astype(np.float32)
  images[:10] = np.nan
  data = wh.random_splits(n, images=images)
  config = wh.make_config(batch_size=b, steps=steps, sigma=1.0, clip=1e-6)
  workdir = str(tmp_path)
  loop.train(config, workdir, dataset=data)
  rows = wh.read_metrics(workdir)
  assert len(rows) == steps == len(data.train.calls)
  total_bad = 0
  for row, idx in zip(rows, data.train.calls):
    drawn = row['realized_batch_size'] + row['nonfinite_gradients']
    real = idx[:int(drawn)]
    assert len(np.unique(real)) == len(real)
    assert np.all(idx[int(drawn):] == 0)  # the rest is padding
    bad = int(np.sum(real < 10))
    assert row['nonfinite_gradients'] == bad
    assert row['clip_fraction'] == 1.0
    total_bad += bad
  assert total_bad > 0
  state = wh.final_state(workdir)
  assert np.all(np.isfinite(np.asarray(state['params']['head']['kernel'])))
