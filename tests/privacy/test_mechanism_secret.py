"""The mechanism's randomness is secret: fresh per run, private to the workdir, absent
from every published file and from compiled programs; seeded only behind the labelled
testing switch (privacy/mechanism_secret.py)."""
import dataclasses
import os
import stat

import jax
import numpy as np
import optax
import pytest

from configs import quickstart
from image_classification.data import digits
from image_classification.models import registry
from image_classification.privacy import batch_selection
from image_classification.privacy import mechanism_secret
from image_classification import run_files
from image_classification.training import checkpoint
from image_classification.training import dp_step
from image_classification.training import loop
from image_classification.training import mesh as mesh_lib
from tests.training import wiring_helpers


# ------------------------------------------------------------------ the secret file
def test_each_new_workdir_draws_its_own_secret_owner_only(tmp_path):
  a = mechanism_secret.for_run(str(tmp_path / 'a'), seed=0, insecure=False,
                               resuming=False)
  b = mechanism_secret.for_run(str(tmp_path / 'b'), seed=0, insecure=False,
                               resuming=False)
  assert a.noise_key_words != b.noise_key_words
  assert a.sampling_seed != b.sampling_seed
  assert not a.insecure
  mode = stat.S_IMODE(os.stat(mechanism_secret.path(str(tmp_path / 'a'))).st_mode)
  assert mode == 0o600
  # A resume reads the same secret back.
  again = mechanism_secret.for_run(str(tmp_path / 'a'), seed=0, insecure=False,
                                   resuming=True)
  assert again == a
  assert 'hidden' in repr(a) and str(a.sampling_seed) not in repr(a)


def test_noise_and_sampling_are_independent_derivations_of_the_secret():
  r = mechanism_secret.from_secret(bytes(32))
  other = mechanism_secret.from_secret(bytes(31) + b'\x01')
  assert r.noise_key_words != other.noise_key_words
  assert r.sampling_seed != other.sampling_seed
  assert r.sampling_seed.bit_length() > 200  # all 256 bits reach the sampler
  words = r.noise_key_words
  assert int.from_bytes(words[0].to_bytes(4, 'little') + words[1].to_bytes(4, 'little'),
                        'little') != r.sampling_seed % 2**64


def test_a_resume_without_the_secret_is_refused_naming_the_file(tmp_path):
  with pytest.raises(mechanism_secret.SecretError, match=run_files.MECHANISM_SECRET):
    mechanism_secret.for_run(str(tmp_path), seed=0, insecure=False, resuming=True)
  with open(mechanism_secret.path(str(tmp_path)), 'w') as f:
    f.write('{"secret_hex": "zz"}')
  with pytest.raises(mechanism_secret.SecretError, match='cannot be read'):
    mechanism_secret.for_run(str(tmp_path), seed=0, insecure=False, resuming=True)


def test_the_testing_switch_reproduces_the_seeded_keys():
  for seed in (0, 7, 2**40 + 3):
    r = mechanism_secret.from_seed(seed)
    assert r.insecure
    np.testing.assert_array_equal(r.noise_key(), np.asarray(jax.random.PRNGKey(seed)))
    assert r.sampling_seed == seed


def test_the_noise_key_is_not_compiled_into_the_step():
  """The key is an argument of the jitted step, so the compilation cache and XLA dumps
  never hold it."""
  model = registry.build('cnn', 3, channels=(4,))
  params = model.init(jax.random.PRNGKey(0), np.zeros((1, 6, 6, 1), np.float32))['params']
  optimizer = optax.sgd(1.0)
  cfg = dp_step.StepConfig(clipping_norm=1.0, noise_multiplier=1.0,
                           expected_batch_size=4.0, micro_batch_size=0,
                           per_example_grads='vmap')
  mesh = mesh_lib.make_mesh()
  words = (0x9E3779B9, 0x7F4A7C15)
  step = dp_step.DPStep(model.apply, optimizer, cfg, mesh, jax.random.PRNGKey(0),
                        noise_key=np.asarray(words, np.uint32))
  state = dp_step.init_state(params, optimizer, False)
  images = np.zeros((4, 6, 6, 1), np.uint8)
  lowered = step.step.lower(state, images, np.zeros(4, np.int32), np.ones(4, bool),
                            step.noise_key)
  text = lowered.as_text() + lowered.compile().as_text()
  for w in words:
    assert str(w) not in text and f'{w:x}' not in text.lower()
  # And the key given is the key used: two keys, two different updates.
  other = dp_step.DPStep(model.apply, optimizer, cfg, mesh, jax.random.PRNGKey(0),
                         noise_key=np.asarray((1, 2), np.uint32))
  batch = (images, np.zeros(4, np.int32), np.ones(4, bool))
  fresh = lambda: dp_step.init_state(jax.tree_util.tree_map(np.array, params),  # pylint: disable=g-long-lambda
                                     optimizer, False)
  p1 = jax.device_get(step.run(fresh(), [batch])[0])
  p2 = jax.device_get(other.run(fresh(), [batch])[0])
  assert not np.allclose(jax.tree_util.tree_leaves(p1.params)[0],
                         jax.tree_util.tree_leaves(p2.params)[0])


# ------------------------------------------------------------------ through the trainer
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
  ckpt = checkpoint.Checkpoints(workdir)
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
  assert not os.path.exists(mechanism_secret.path(workdir))  # none was drawn


def _needles(secret: bytes) -> tuple[list[str], list[bytes]]:
  r = mechanism_secret.from_secret(secret)
  w0, w1 = r.noise_key_words
  texts = [secret.hex(), str(r.sampling_seed), f'{r.sampling_seed:x}', str(w0), str(w1),
           f'{w0:08x}', f'{w1:08x}', str((w0 << 32) | w1)]
  raw = [secret, r.sampling_seed.to_bytes(32, 'little'),
         r.sampling_seed.to_bytes(32, 'big'), np.asarray(r.noise_key_words,
                                                         '<u4').tobytes(),
         np.asarray(r.noise_key_words, '>u4').tobytes()]
  return texts, raw


def test_no_published_file_holds_the_secret(tmp_path):
  workdir = str(tmp_path / 'run')
  secret = bytes(range(101, 133))
  mechanism_secret.write(workdir, secret)
  _train(workdir, _config())
  assert not os.path.exists(mechanism_secret.path(workdir))  # deleted when complete
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


def test_the_sampler_draws_from_the_secret_seed_not_config_seed():
  secret = mechanism_secret.from_secret(bytes(range(32)))
  a = batch_selection.PoissonSampling(1000, 100, seed=secret.sampling_seed)
  seeded = batch_selection.PoissonSampling(1000, 100, seed=0)
  assert not np.array_equal(a.indices(0), seeded.indices(0))
  assert 'seed' not in repr(a)
