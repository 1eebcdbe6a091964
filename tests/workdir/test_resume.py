"""Resume. For real: launch.py killed with SIGKILL after its first checkpoint and run
again with the same command ends where an uninterrupted run ends (same parameters, same
accuracy, same epsilon), and the ledger continues rather than restarting. And the
policy (workdir/resume.py): a workdir whose config, seed or privacy plan differs is
refused, naming what differs; a finished run is recognised."""
import dataclasses
import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest

from configs import quickstart
from image_classification.workdir import run_files
from image_classification.workdir import checkpoint_store
from image_classification.training import loop
from image_classification.workdir import resume
from image_classification.workdir import secret_file
from tests.training import helpers

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# The quickstart shrunk to a few seconds: a tiny model, a fixed noise multiplier (no
# calibration), 24 steps with a checkpoint every 3, evaluation only at the end.
OVERRIDES = {
    'training.num_steps': 24,
    'training.checkpoint_every_steps': 3,
    'training.log_every_steps': 4,
    'training.eval_every_steps': 0,
    'training.batch_size': 64,
    'privacy.noise_multiplier': 2.0,
    'model.kwargs.channels': (4,),
}


def _command(workdir):
  flags = [f'--config.{k}={v}'.replace(' ', '') for k, v in OVERRIDES.items()]
  return [sys.executable, 'launch.py', '--config=configs/quickstart.py', *flags,
          f'--workdir={workdir}']


def _config():
  config = quickstart.get_config()
  for key, value in OVERRIDES.items():
    node = config
    *parents, leaf = key.split('.')
    for p in parents:
      node = node[p]
    node[leaf] = value
  return config


@pytest.fixture(scope='module')
def env(tmp_path_factory):
  env = dict(os.environ)
  # Share compiled programs between the three launches (compilation dominates here).
  env.update(JAX_COMPILATION_CACHE_DIR=str(tmp_path_factory.mktemp('jax_cache')),
             JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS='0',
             JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES='0',
             PYTHONPATH=ROOT, JAX_PLATFORMS='cpu')
  return env


def _run(workdir, env):
  result = subprocess.run(_command(workdir), cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=300, check=False)
  assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
  return result.stdout


def _checkpoint_steps(workdir):
  folder = os.path.join(workdir, checkpoint_store.CHECKPOINTS)
  if not os.path.isdir(folder):
    return []
  return sorted(int(n) for n in os.listdir(folder) if n.isdigit())


def _metrics(workdir):
  with open(os.path.join(workdir, run_files.METRICS)) as f:
    return [json.loads(line) for line in f]


def _final_state(workdir):
  ckpt = checkpoint_store.Checkpoints(workdir)
  try:
    restored = ckpt.restore_latest()  # verified: checksum and step
  finally:
    ckpt.close()
  return restored


def test_killed_run_resumes_to_the_same_result(tmp_path, env):
  reference, resumed = str(tmp_path / 'reference'), str(tmp_path / 'resumed')
  # Both runs get the same secret noise/batch randomness (as if one workdir had been
  # copied), so that the resumed run can be compared with the uninterrupted one.
  secret = bytes(range(32))
  for workdir in (reference, resumed):
    secret_file.write(workdir, secret)
  _run(reference, env)
  assert not os.path.exists(secret_file.path(reference))  # deleted when complete

  # Start the same run elsewhere and SIGKILL it as soon as a checkpoint exists.
  proc = subprocess.Popen(_command(resumed), cwd=ROOT, env=env,
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  try:
    deadline = time.time() + 120
    while not _checkpoint_steps(resumed) and proc.poll() is None:
      assert time.time() < deadline, 'no checkpoint appeared'
      time.sleep(0.01)
    proc.kill()
  finally:
    proc.wait()
  assert proc.returncode == -9, 'the run ended before it could be killed'
  killed_at = _checkpoint_steps(resumed)
  assert killed_at and killed_at[-1] < 24
  assert not os.path.exists(os.path.join(resumed, run_files.SUMMARY))
  assert os.path.exists(secret_file.path(resumed))  # kept for the resume

  out = _run(resumed, env)
  assert 'resuming from the checkpoint of step' in out

  # Same final parameters (the whole state: params, EMA, momentum, step).
  a, b = _final_state(reference), _final_state(resumed)
  assert a.step == b.step == 24
  flat_a = {k: v for k, v in _flatten(a.state)}
  flat_b = {k: v for k, v in _flatten(b.state)}
  assert flat_a.keys() == flat_b.keys()
  for k in flat_a:
    np.testing.assert_allclose(flat_b[k], flat_a[k], rtol=1e-6, atol=1e-7, err_msg=k)
  assert b.metadata['epsilon'] == a.metadata['epsilon']

  # Same summary: accuracy and epsilon; the ledger was continued, not reset.
  sa = run_files.read_json(reference, run_files.SUMMARY)
  sb = run_files.read_json(resumed, run_files.SUMMARY)
  assert sb['status'] == 'complete'
  assert sb['test_accuracy'] == sa['test_accuracy']
  assert sb['epsilon'] == sa['epsilon']
  assert sb['steps'] == 24 and 0 < sb['resumed_from_step'] < 24
  privacy = run_files.read_json(resumed, run_files.PRIVACY)
  assert privacy['steps_taken'] == 24 and privacy['epsilon'] == sa['epsilon']

  # metrics.jsonl: rows after the restored step were dropped and redone, once each.
  rows_a, rows_b = _metrics(reference), _metrics(resumed)
  assert [r['step'] for r in rows_b] == [r['step'] for r in rows_a]
  for ra, rb in zip(rows_a, rows_b):
    assert rb['epsilon'] == ra['epsilon']
  assert rows_b[-1]['test_accuracy'] == rows_a[-1]['test_accuracy']

  # A finished run is reported, not retrained; a different config is refused.
  config = _config()
  before = os.path.getmtime(os.path.join(resumed, run_files.SUMMARY))
  assert loop.train(config, resumed)['test_accuracy'] == sb['test_accuracy']
  assert os.path.getmtime(os.path.join(resumed, run_files.SUMMARY)) == before
  config.training.num_steps = 30
  with pytest.raises(checkpoint_store.CheckpointError, match='config.training.num_steps'):
    loop.train(config, resumed)


def _flatten(tree, prefix=''):
  if isinstance(tree, dict):
    for k, v in tree.items():
      yield from _flatten(v, f'{prefix}/{k}')
  elif isinstance(tree, (list, tuple)):
    for i, v in enumerate(tree):
      yield from _flatten(v, f'{prefix}/{i}')
  elif tree is not None:
    yield prefix, np.asarray(tree)


def test_different_config_is_refused_naming_the_field(tmp_path):
  config = quickstart.get_config()
  run_files.write_json(str(tmp_path), run_files.CONFIG, config.to_dict())
  resume.check_config(str(tmp_path), config)  # same config: fine

  unimportant = quickstart.get_config()
  unimportant.wandb.mode = 'offline'
  unimportant.training.log_every_steps = 7
  unimportant.training.eval_every_steps = 0
  unimportant.training.checkpoint_every_steps = 5
  resume.check_config(str(tmp_path), unimportant)

  changed = quickstart.get_config()
  changed.training.num_steps = config.training.num_steps + 1
  changed.model.kwargs.channels = (8,)
  with pytest.raises(checkpoint_store.CheckpointError) as e:
    resume.check_config(str(tmp_path), changed)
  message = str(e.value)
  n = config.training.num_steps
  assert f'config.training.num_steps: {n} in the workdir, {n + 1} now' in message
  assert 'config.model.kwargs.channels' in message
  assert str(tmp_path) in message and 'another --workdir' in message
  assert 'log_every_steps' not in message


def test_different_plan_or_seed_is_refused():
  plan = helpers.privacy_plan()
  metadata = resume.make_metadata(0, 6, 0.6, plan)
  same_ledger = lambda step: 0.1 * step
  resume.check_resume(metadata, 0, plan, same_ledger)
  with pytest.raises(checkpoint_store.CheckpointError, match='plan.noise_multiplier'):
    resume.check_resume(metadata, 0, helpers.privacy_plan(noise_multiplier=1.6),
                        same_ledger)
  with pytest.raises(checkpoint_store.CheckpointError, match='plan.steps'):
    resume.check_resume(metadata, 0, helpers.privacy_plan(steps=20), same_ledger)
  with pytest.raises(checkpoint_store.CheckpointError, match='seed'):
    resume.check_resume(metadata, 1, plan, same_ledger)
  with pytest.raises(checkpoint_store.CheckpointError, match='epsilon after 6 steps'):
    resume.check_resume(metadata, 0, plan, lambda step: 0.2 * step)
  # Another training split: the message says what can change it besides the config.
  with pytest.raises(checkpoint_store.CheckpointError,
                     match=r'plan.dataset_size: 1437 in the checkpoint, 1400 now \(the '
                           r'training split holds other records.*image_size'):
    resume.check_resume(metadata, 0, dataclasses.replace(plan, dataset_size=1400),
                        same_ledger)


def test_a_checkpoint_of_the_64_bit_noise_key_is_not_resumed_with_the_128_bit_one():
  """Checkpoints written before the metadata named the noise generator drew from a
  64-bit threefry2x32 key: resuming one with a secret's 128-bit key would change the
  noise stream halfway (and BandMF's replayed state would not be the one that ran)."""
  plan = helpers.privacy_plan()
  same_ledger = lambda step: 0.1 * step
  metadata = resume.make_metadata(0, 6, 0.6, plan)
  assert metadata['noise_generator'] == 'threefry4x32'
  resume.check_resume(metadata, 0, plan, same_ledger)
  legacy = {k: v for k, v in metadata.items() if k != 'noise_generator'}
  with pytest.raises(checkpoint_store.CheckpointError,
                     match='noise generator: threefry2x32 in the checkpoint .* '
                           'threefry4x32 now'):
    resume.check_resume(legacy, 0, plan, same_ledger)
  # The seeded testing switch keeps the 64-bit key: its old checkpoints resume.
  seeded = dataclasses.replace(plan, insecure_seeded_noise=True)
  resume.check_resume(legacy, 0, seeded, same_ledger)
  assert resume.make_metadata(0, 6, 0.6, seeded)['noise_generator'] == 'threefry2x32'


def test_non_private_metadata_round_trips(tmp_path):
  plan = helpers.privacy_plan(noise_multiplier=0.0)
  ckpt = checkpoint_store.Checkpoints(str(tmp_path))
  ckpt.save(helpers.train_state(4), resume.make_metadata(0, 4, float('inf'), plan))
  restored = ckpt.restore_latest(helpers.train_state(0))
  ckpt.close()
  assert restored.metadata['epsilon'] == 'inf'
  resume.check_resume(restored.metadata, 0, plan, lambda step: float('inf'))


def test_completed_summary(tmp_path):
  assert resume.completed_summary(str(tmp_path)) is None
  run_files.write_json(str(tmp_path), run_files.SUMMARY, {'status': 'complete'})
  assert resume.completed_summary(str(tmp_path)) == {'status': 'complete'}
