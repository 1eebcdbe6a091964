"""launch.py's persistent compilation cache: a second identical run compiles nothing
new, and the cache never holds the run's secret noise key."""
import os
import subprocess
import sys

from image_classification.privacy import mechanism_secret
from image_classification.workdir import secret_file

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _launch(workdir, cache_dir=None, env_cache=None):
  # Every compilation is cached (no 0.5 s threshold), so what is cached does not depend
  # on how busy the CPU is.
  env = dict(os.environ, JAX_PLATFORMS='cpu', WANDB_MODE='disabled',
             JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS='0')
  env.pop('JAX_COMPILATION_CACHE_DIR', None)
  if env_cache:
    env['JAX_COMPILATION_CACHE_DIR'] = env_cache
  flag = [] if cache_dir is None else [f'--compilation_cache_dir={cache_dir}']
  command = [sys.executable, 'launch.py', '--config=configs/quickstart.py',
             f'--workdir={workdir}', *flag,
             '--config.training.num_steps=3', '--config.training.batch_size=64',
             '--config.privacy.noise_multiplier=3.0', '--config.model.kwargs.channels=(4,)']
  result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=300, check=False)
  assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]


def test_second_run_reuses_the_cache_which_holds_no_secret(tmp_path):
  cache = str(tmp_path / 'cache')
  secret = bytes(range(7, 39))
  secret_file.write(str(tmp_path / 'a'), secret)
  _launch(str(tmp_path / 'a'), cache)
  first = set(os.listdir(cache))
  assert any('fused_step' in name for name in first), first  # the DP step was cached
  _launch(str(tmp_path / 'b'), cache)
  second = set(os.listdir(cache))
  # The second run, with another secret, found everything the first cached under the
  # same keys and added none (a key that held the run's secret would differ).
  assert second == first, (second - first, first - second)
  r = mechanism_secret.from_secret(secret)
  needles = [secret, r.sampling_seed.to_bytes(32, 'little'),
             r.noise_key().astype('<u4').tobytes(), r.noise_key().astype('>u4').tobytes(),
             r.augment_key().astype('<u4').tobytes(), r.augment_key().astype('>u4').tobytes(),
             secret.hex().encode(), str(r.sampling_seed).encode()]
  for name in first:
    with open(os.path.join(cache, name), 'rb') as f:
      content = f.read()
    for needle in needles:
      assert needle not in content, (name, needle)


def test_the_environment_sets_the_folder_and_none_turns_it_off(tmp_path):
  from_env = str(tmp_path / 'env_cache')
  _launch(str(tmp_path / 'a'), env_cache=from_env)
  assert any('fused_step' in name for name in os.listdir(from_env))
  off = str(tmp_path / 'off_cache')
  _launch(str(tmp_path / 'b'), cache_dir='none', env_cache=off)
  assert not os.path.exists(off) or not os.listdir(off)
