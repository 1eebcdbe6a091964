"""The workdir's secret file (workdir/secret_file.py): fresh per workdir, owner-only,
read back on a resume, required by a resume, deleted when the run completes, and absent
from every published file; the testing switch draws none."""
import dataclasses
import os
import stat

import jax
import numpy as np
import pytest

from configs import quickstart
from image_classification.data.readers import digits
from image_classification.privacy import mechanism_secret
from image_classification.workdir import run_files
from image_classification.workdir import checkpoint_store
from image_classification.training import loop
from image_classification.workdir import secret_file
from tests.training import wiring_helpers


def test_each_new_workdir_draws_its_own_secret_owner_only(tmp_path):
  a = secret_file.for_run(str(tmp_path / 'a'), seed=0, insecure=False,
                          resuming=False)
  b = secret_file.for_run(str(tmp_path / 'b'), seed=0, insecure=False,
                          resuming=False)
  assert a.noise_key_words != b.noise_key_words
  assert a.sampling_seed != b.sampling_seed
  assert not a.insecure
  mode = stat.S_IMODE(os.stat(secret_file.path(str(tmp_path / 'a'))).st_mode)
  assert mode == 0o600
  # A resume reads the same secret back.
  again = secret_file.for_run(str(tmp_path / 'a'), seed=0, insecure=False,
                              resuming=True)
  assert again == a
  assert 'hidden' in repr(a) and str(a.sampling_seed) not in repr(a)


def test_a_resume_without_the_secret_is_refused_naming_the_file(tmp_path):
  with pytest.raises(mechanism_secret.SecretError, match=secret_file.SECRET_FILE):
    secret_file.for_run(str(tmp_path), seed=0, insecure=False, resuming=True)
  with open(secret_file.path(str(tmp_path)), 'w') as f:
    f.write('{"secret_hex": "zz"}')
  with pytest.raises(mechanism_secret.SecretError, match='cannot be read'):
    secret_file.for_run(str(tmp_path), seed=0, insecure=False, resuming=True)


def test_a_fresh_secret_after_released_metrics_is_refused(tmp_path):
  """secret_file: no checkpoint, no secret, but an earlier attempt's metrics rows."""
  workdir = str(tmp_path)
  with pytest.raises(mechanism_secret.SecretError,
                     match=r'already released 3 metrics row\(s\).*new --workdir'):
    secret_file.for_run(workdir, seed=0, insecure=False, resuming=False, released_rows=3)
  assert not os.path.exists(secret_file.path(workdir))  # none drawn
  # With the file, the same restart continues that secret; without rows, a new run
  # draws one; the seeded switch reads nothing.
  drawn = secret_file.for_run(workdir, seed=0, insecure=False, resuming=False)
  assert secret_file.for_run(workdir, seed=0, insecure=False, resuming=False,
                             released_rows=3) == drawn
  assert secret_file.for_run(str(tmp_path / 'seeded'), seed=0, insecure=True,
                             resuming=False, released_rows=3).insecure


def test_a_restart_whose_secret_is_gone_after_it_released_metrics_is_refused(tmp_path):
  """The trainer: an earlier attempt wrote metrics rows and stopped before its first
  checkpoint, then its secret file was lost. Its figures came from that secret's
  noise; a fresh secret would be a second mechanism the ledger does not count."""
  workdir = str(tmp_path / 'run')
  config = _config()
  run_files.write_json(workdir, run_files.CONFIG, config.to_dict())
  rows = [{'step': 1, 'epsilon': 0.5, 'train_loss': 2.2},
          {'step': 2, 'epsilon': 0.7, 'train_loss': 2.1, 'test_accuracy': 0.3}]
  writer = run_files.MetricsWriter(workdir, truncate_after_step=2)
  for row in rows:
    writer.write(row)
  writer.close()
  with open(os.path.join(workdir, run_files.METRICS)) as f:
    before = f.read()
  with pytest.raises(mechanism_secret.SecretError,
                     match=f'{secret_file.SECRET_FILE} is missing, but an earlier attempt'):
    loop.train(config, workdir, dataset=digits.load())
  assert not os.path.exists(secret_file.path(workdir))  # no fresh secret drawn
  with open(os.path.join(workdir, run_files.METRICS)) as f:
    assert f.read() == before  # the released rows are kept
  folder = os.path.join(workdir, checkpoint_store.CHECKPOINTS)
  assert not os.path.exists(folder) or not os.listdir(folder)  # no step was taken


def _config(**privacy):
  config = quickstart.get_config()
  config.training.num_steps = 4
  config.training.batch_size = 64
  config.training.log_every_steps = 1
  config.training.checkpoint_every_steps = 2
  config.privacy.noise_multiplier = 2.0
  config.model.kwargs.channels = (4,)
  for k, v in privacy.items():
    config.privacy[k] = v
  return config


def _train(workdir, config):
  """Trains in-process; returns (batches drawn per step, final parameters)."""
  source = wiring_helpers.RecordingSource(digits.load().train)
  data = dataclasses.replace(digits.load(), train=source)
  loop.train(config, workdir, dataset=data)
  batches = [np.sort(idx[idx > 0]) for idx in source.calls]  # padding points at 0
  ckpt = checkpoint_store.Checkpoints(workdir)
  try:
    params = ckpt.restore_latest().state['params']
  finally:
    ckpt.close()
  return batches, np.concatenate([np.ravel(x) for x in jax.tree_util.tree_leaves(params)])


def test_two_runs_of_one_config_add_different_noise_and_draw_different_batches(tmp_path):
  config = _config()
  batches_a, params_a = _train(str(tmp_path / 'a'), config)
  batches_b, params_b = _train(str(tmp_path / 'b'), config)
  assert len(batches_a) == len(batches_b) == 4
  assert any(not np.array_equal(x, y) for x, y in zip(batches_a, batches_b))
  assert not np.allclose(params_a, params_b)
  # With every example in every step (fixed-size batches of the whole set) the batches
  # agree, so what still differs is the noise alone.
  full = _config(sampling='fixed', noise_multiplier=4.0)
  full.training.batch_size = digits.load().train.num_examples
  full.training.num_steps = 1
  batches_c, params_c = _train(str(tmp_path / 'c'), full)
  batches_d, params_d = _train(str(tmp_path / 'd'), full)
  assert all(np.array_equal(x, y) for x, y in zip(batches_c, batches_d))
  diff = params_c - params_d
  # Two independent noise draws: after one step of SGD (momentum starts at 0) the
  # difference has std lr sqrt(2) sigma C / B.
  lr = full.training.optimizer.learning_rate
  expected = lr * np.sqrt(2) * 4.0 * 1.0 / full.training.batch_size
  assert np.std(diff) == pytest.approx(expected, rel=0.1)


def test_the_testing_switch_reproduces_seeded_runs_and_says_so(tmp_path, capsys):
  config = _config(insecure_seeded_noise=True)
  batches_a, params_a = _train(str(tmp_path / 'a'), config)
  batches_b, params_b = _train(str(tmp_path / 'b'), config)
  np.testing.assert_array_equal(params_a, params_b)
  # The batches are the seed's batches, as before the secret existed.
  n = digits.load().train.num_examples
  for step, drawn in enumerate(batches_a):
    rng = np.random.default_rng([config.seed, 0x5A3D, step])
    expected = np.flatnonzero(rng.random(n) < 64 / n)
    np.testing.assert_array_equal(drawn, expected[expected > 0])
    np.testing.assert_array_equal(drawn, batches_b[step])
  assert mechanism_secret.INSECURE_WARNING in capsys.readouterr().out
  workdir = str(tmp_path / 'a')
  with open(os.path.join(workdir, run_files.PRIVACY_MD)) as f:
    first = f.read().splitlines()[:3]
  assert mechanism_secret.INSECURE_WARNING in first[2]
  for name in (run_files.SUMMARY, run_files.PRIVACY):
    assert run_files.read_json(workdir, name)['WARNING'] == \
        mechanism_secret.INSECURE_WARNING
  assert not os.path.exists(secret_file.path(workdir))  # none was drawn


def _needles(secret: bytes) -> tuple[list[str], list[bytes]]:
  r = mechanism_secret.from_secret(secret)
  texts = [secret.hex(), str(r.sampling_seed), f'{r.sampling_seed:x}']
  raw = [secret, r.sampling_seed.to_bytes(32, 'little'),
         r.sampling_seed.to_bytes(32, 'big')]
  for words in (r.noise_key_words, r.augment_key_words):  # the noise, the augmentation
    assert len(words) == 4
    texts += [*(str(w) for w in words), *(f'{w:08x}' for w in words),
              str((words[0] << 32) | words[1]), str((words[2] << 32) | words[3])]
    raw += [np.asarray(words, '<u4').tobytes(), np.asarray(words, '>u4').tobytes()]
  return texts, raw


def test_no_published_file_holds_the_secret(tmp_path):
  workdir = str(tmp_path / 'run')
  secret = bytes(range(101, 133))
  secret_file.write(workdir, secret)
  _train(workdir, _config())
  assert not os.path.exists(secret_file.path(workdir))  # deleted when complete
  texts, raw = _needles(secret)
  searched = 0
  for folder, _, files in os.walk(workdir):
    for name in files:
      with open(os.path.join(folder, name), 'rb') as f:
        content = f.read()
      searched += 1
      for needle in raw + [t.encode() for t in texts]:
        assert needle not in content, (name, needle)
  # config, metrics, privacy.json/.md, summary and the checkpoints' files were searched.
  assert searched >= 8
  for name in (run_files.CONFIG, run_files.METRICS, run_files.PRIVACY,
               run_files.PRIVACY_MD, run_files.SUMMARY):
    assert os.path.exists(os.path.join(workdir, name))
  privacy = run_files.read_json(workdir, run_files.PRIVACY)
  assert 'secret' in privacy['randomness'] and 'WARNING' not in privacy


def test_the_file_is_never_overwritten_and_a_wrong_size_is_refused(tmp_path):
  workdir = str(tmp_path)
  secret_file.write(workdir, bytes(32))
  with pytest.raises(FileExistsError):
    secret_file.write(workdir, bytes(range(32)))
  assert secret_file.read(workdir) == bytes(32)
  with pytest.raises(mechanism_secret.SecretError, match='32 bytes'):
    secret_file.write(str(tmp_path / 'other'), bytes(16))
  with open(secret_file.path(workdir), 'w') as f:
    f.write('{"secret_hex": "%s"}' % bytes(16).hex())
  with pytest.raises(mechanism_secret.SecretError, match='holds 16 bytes'):
    secret_file.read(workdir)
  secret_file.discard(workdir)
  assert not os.path.exists(secret_file.path(workdir))
  secret_file.discard(workdir)  # nothing left: still fine


def test_the_privacy_report_names_the_file():
  assert secret_file.SECRET_FILE in mechanism_secret.describe(insecure=False)
  assert secret_file.SECRET_FILE not in mechanism_secret.describe(insecure=True)


def test_the_step_augments_with_the_secrets_key_not_one_from_config_seed(tmp_path):
  """Augmentation and dropout keys are drawn per batch slot, and adding one example
  shifts the slots of the examples sorted after it: with keys the adversary can compute
  (from config.seed, which config.json publishes) the other examples' augmentations
  would change with it and the step's sensitivity would exceed C (docs/privacy.md,
  invariant 18). The trainer's step must hold the workdir secret's key."""
  import time  # pylint: disable=g-import-not-at-top
  config = _config()
  config.data.random_flip = True
  keys = []
  for name in ('a', 'b'):
    workdir = str(tmp_path / name)
    secret = bytes(range(32)) if name == 'a' else bytes(range(1, 33))
    secret_file.write(workdir, secret)
    exp = loop.prepare(config, workdir, dry_run=False, dataset=digits.load(), audit=None)
    run = loop.start(exp, workdir, time.time())
    try:
      key = np.asarray(run.step_fn.augment_key)
    finally:
      run.checkpoints.close()
    np.testing.assert_array_equal(
        key, mechanism_secret.from_secret(secret).augment_key())
    assert key.shape == (4,)  # 128 bits, not PRNGKey(config.seed)'s 64
    keys.append(key)
  assert not np.array_equal(keys[0], keys[1])  # same config.seed, other secret
  # And the key reaches the augmentation: per-slot keys differ between the secrets.
  from image_classification.training import dp_step  # pylint: disable=g-import-not-at-top
  slot_keys = [np.asarray(dp_step.example_keys(k, 3, 0, 8)) for k in keys]
  assert slot_keys[0].shape == (8, 2) and not np.array_equal(*slot_keys)
  assert len({tuple(k) for k in slot_keys[0]}) == 8  # one key per slot
