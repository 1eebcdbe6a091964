"""BandMF through the real trainer: b = 1 is the DP-SGD run exactly; a run SIGKILLed
after a checkpoint resumes to the uninterrupted run's state (the noise state included);
4 devices give the 1-device result."""
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
from image_classification.workdir import secret_file

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# The quickstart shrunk to seconds: a tiny model, a fixed noise multiplier (no
# calibration), 12 steps with a checkpoint every 3, evaluation only at the end.
OVERRIDES = {
    'training.num_steps': 12,
    'training.checkpoint_every_steps': 3,
    'training.log_every_steps': 4,
    'training.eval_every_steps': 0,
    'training.batch_size': 64,
    'privacy.noise_multiplier': 2.0,
    'privacy.mechanism': 'bandmf',
    'privacy.num_bands': 4,
    'model.kwargs.channels': (4,),
    'wandb.mode': 'disabled',
}


def _config(**extra):
  config = quickstart.get_config()
  for key, value in {**OVERRIDES, **extra}.items():
    node = config
    *parents, leaf = key.split('.')
    for p in parents:
      node = node[p]
    node[leaf] = value
  return config


def _command(workdir, **extra):
  flags = [f'--config.{k}={v}'.replace(' ', '') for k, v in {**OVERRIDES, **extra}.items()]
  return [sys.executable, 'launch.py', '--config=configs/quickstart.py', *flags,
          f'--workdir={workdir}']


@pytest.fixture(scope='module')
def env(tmp_path_factory):
  # Share compiled programs between the three launches (compilation dominates here).
  return dict(os.environ, PYTHONPATH=ROOT, JAX_PLATFORMS='cpu',
              JAX_COMPILATION_CACHE_DIR=str(tmp_path_factory.mktemp('jax_cache')),
              JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS='0',
              JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES='0')


def _run(workdir, env, **extra):
  result = subprocess.run(_command(workdir, **extra), cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300, check=False)
  assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
  return result.stdout


def _final(workdir):
  ckpt = checkpoint_store.Checkpoints(workdir)
  try:
    return ckpt.restore_latest()
  finally:
    ckpt.close()


def _flatten(tree, prefix=''):
  if isinstance(tree, dict):
    for k, v in tree.items():
      yield from _flatten(v, f'{prefix}/{k}')
  elif isinstance(tree, (list, tuple)):
    for i, v in enumerate(tree):
      yield from _flatten(v, f'{prefix}/{i}')
  elif tree is not None:
    yield prefix, np.asarray(tree)


def test_one_band_is_exactly_the_dpsgd_run(tmp_path):
  """Same seed, seeded (insecure, testing-only) noise: mechanism='bandmf' with b = 1
  calibrates the same sigma, draws the same batches and noise, ends at the same
  parameters bit for bit, with the same epsilon."""
  common = {'privacy.insecure_seeded_noise': True, 'training.num_steps': 8,
            'training.checkpoint_every_steps': 0, 'privacy.noise_multiplier': None,
            'privacy.target_epsilon': 2.0}
  runs = {}
  for name, extra in (('dpsgd', {'privacy.mechanism': 'dpsgd', 'privacy.num_bands': 1}),
                      ('bandmf1', {'privacy.num_bands': 1})):
    workdir = str(tmp_path / name)
    summary = loop.train(_config(**common, **extra), workdir)
    runs[name] = (summary, run_files.read_json(workdir, run_files.PRIVACY),
                  dict(_flatten(_final(workdir).state)))
  (sa, pa, fa), (sb, pb, fb) = runs['dpsgd'], runs['bandmf1']
  assert pb['mechanism_name'] == 'bandmf' and pb['num_bands'] == 1
  assert pb['noise_multiplier'] == pa['noise_multiplier']
  assert pb['epsilon'] == pa['epsilon'] and sb['epsilon'] == sa['epsilon']
  assert pb['sampling_rate'] == pa['sampling_rate']
  assert fa.keys() == fb.keys()
  for k in fa:
    np.testing.assert_array_equal(fb[k], fa[k], err_msg=k)
  assert sb['test_accuracy'] == sa['test_accuracy']


def test_killed_bandmf_run_resumes_to_the_same_state(tmp_path, env):
  reference, resumed = str(tmp_path / 'reference'), str(tmp_path / 'resumed')
  secret = bytes(range(32))  # the same secret randomness in both workdirs
  for workdir in (reference, resumed):
    secret_file.write(workdir, secret)
  _run(reference, env)

  proc = subprocess.Popen(_command(resumed), cwd=ROOT, env=env,
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  try:
    deadline = time.time() + 180
    folder = os.path.join(resumed, checkpoint_store.CHECKPOINTS)
    while proc.poll() is None and not (
        os.path.isdir(folder) and any(n.isdigit() for n in os.listdir(folder))):
      assert time.time() < deadline, 'no checkpoint appeared'
      time.sleep(0.01)
    proc.kill()
  finally:
    proc.wait()
  assert proc.returncode == -9, 'the run ended before it could be killed'
  out = _run(resumed, env)
  assert 'resuming from the checkpoint of step' in out

  a, b = _final(reference), _final(resumed)
  assert a.step == b.step == 12
  flat_a, flat_b = dict(_flatten(a.state)), dict(_flatten(b.state))
  assert flat_a.keys() == flat_b.keys()
  noise_keys = [k for k in flat_a if k.startswith('/noise_state')]
  assert noise_keys
  for k in noise_keys:  # the secret noise state is never written (rebuilt on resume)
    assert not np.any(flat_a[k]) and not np.any(flat_b[k]), k
  for k in flat_a:
    np.testing.assert_allclose(flat_b[k], flat_a[k], rtol=1e-6, atol=1e-7, err_msg=k)
  assert b.metadata['epsilon'] == a.metadata['epsilon']
  assert b.metadata['plan']['strategy_coefs'] == a.metadata['plan']['strategy_coefs']
  sa = run_files.read_json(reference, run_files.SUMMARY)
  sb = run_files.read_json(resumed, run_files.SUMMARY)
  assert sb['test_accuracy'] == sa['test_accuracy'] and sb['epsilon'] == sa['epsilon']


_MULTI_DEVICE_SCRIPT = '''
import json, sys
sys.path.insert(0, {root!r})
import jax
from tests.training import test_bandmf_training as t
from image_classification.training import loop
config = t._config(**{{'privacy.insecure_seeded_noise': True, 'training.num_steps': 4,
                      'training.checkpoint_every_steps': 0}})
loop.train(config, {workdir!r})
state = t._final({workdir!r}).state
print(json.dumps({{'ndev': len(jax.devices()),
                  'flat': {{k: v.tolist() for k, v in t._flatten(state)}}}}))
'''


# Two subprocess trainings (about a minute on an idle 2-core CPU): marked slow, run with
# `python -m pytest -m slow tests/training/test_bandmf_training.py`. The 1-vs-4-device
# equality of the shared step code runs by default in tests/training/test_dp_step.py.
@pytest.mark.slow
def test_four_devices_equal_one_device(tmp_path):
  results = {}
  for ndev in (1, 4):
    env = dict(os.environ, XLA_FLAGS=f'--xla_force_host_platform_device_count={ndev}',
               JAX_PLATFORMS='cpu', PYTHONPATH=ROOT)
    script = _MULTI_DEVICE_SCRIPT.format(root=ROOT, workdir=str(tmp_path / f'd{ndev}'))
    proc = subprocess.run([sys.executable, '-c', script], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results[ndev] = json.loads(proc.stdout.strip().splitlines()[-1])
  assert results[4]['ndev'] == 4
  one, four = results[1]['flat'], results[4]['flat']
  assert one.keys() == four.keys() and any(k.startswith('/noise_state') for k in one)
  for k in one:
    np.testing.assert_allclose(four[k], one[k], rtol=1e-4, atol=1e-5, err_msg=k)
