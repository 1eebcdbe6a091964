"""One's own Flax model without editing the package: config.model.name =
'path/to/file.py:Class' or 'package.module:Class' (models/custom.py), checked before
anything compiles (models/checks.py: BatchNorm refused naming the layer), trained
with the fast clipping rules where they cover it and 'vmap' where they do not."""
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from image_classification import api
from image_classification.workdir import run_files
from image_classification.models import checks
from image_classification.models import registry
from image_classification.privacy import clipped_sums
from image_classification.training import dp_step

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FILE = 'tests/models/custom_model_example.py'
TINY = f'{FILE}:TinyNet'


def _config(name, **overrides):
  return api.config('configs/quickstart.py', {
      'model.name': name, 'model.kwargs': {}, 'training.num_steps': 3,
      'training.batch_size': 32,
      'training.log_every_steps': 3, 'training.eval_every_steps': 0,
      'data.max_test_examples': 100, 'wandb.mode': 'disabled',
      'privacy.noise_multiplier': 1.0, 'privacy.target_epsilon': 50.0, **overrides})


def _loss_and_batch(model, shape=(8, 8, 1), batch=5, augmult=2):
  params = model.init(jax.random.PRNGKey(0), jnp.zeros((1,) + shape),
                      is_training=False)['params']
  leaves, treedef = jax.tree_util.tree_flatten(params)
  params = jax.tree_util.tree_unflatten(treedef, [
      x + 0.3 * jax.random.normal(jax.random.PRNGKey(i), x.shape)
      for i, x in enumerate(leaves)])
  views = jax.random.normal(jax.random.PRNGKey(7), (batch, augmult) + shape)
  labels = jnp.arange(batch) % 10
  keys = jax.random.split(jax.random.PRNGKey(8), batch)

  def loss(p, v, y, k):
    logits = model.apply({'params': p}, v, is_training=True, rngs={'dropout': k})
    return jnp.mean(dp_step.cross_entropy(logits, jnp.broadcast_to(y, v.shape[:1])))

  return loss, params, views, labels, keys


@pytest.mark.parametrize('name', [TINY, 'tests.models.custom_model_example:TinyNet'])
def test_a_file_or_a_module_path_builds_with_the_configs_kwargs(name):
  model = registry.build(name, 10, width=6)
  assert type(model).__name__ == 'TinyNet' and model.num_classes == 10
  assert model.width == 6
  assert registry.keyword_arguments(name) == ['width']


def test_fast_and_ghost_give_the_reference_clipped_sum_on_the_users_model():
  """The layers with rules (Conv, Dense) and without (Scale, GroupNorm: generic)
  give vmap's clipped sum; each example moves the sum by at most C."""
  model = registry.build(TINY, 10)
  loss, params, views, labels, keys = _loss_and_batch(model)
  mask = jnp.array([True, True, True, True, False])
  clip = 0.1
  jitted = {name: jax.jit(lambda *a, name=name: clipped_sums.get(name)(loss, *a, clip))
            for name in ('vmap', 'fast', 'ghost')}

  def clipped_sum(name, mask):
    return jitted[name](params, views, labels, keys, mask)

  want, want_norms, _, _ = clipped_sum('vmap', mask)
  for name in ('fast', 'ghost'):
    used, note = dp_step.covered_implementation(model.apply, params, (8, 8, 1), name, 2)
    assert used == name and 'generic' in note and 'conv' in note, note
    got, norms, _, _ = clipped_sum(name, mask)
    for a, b in zip(jax.tree_util.tree_leaves(want), jax.tree_util.tree_leaves(got)):
      np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(norms, want_norms, rtol=1e-5)
  # Removing one example moves the sum by at most C.
  without, _, _, _ = clipped_sum('fast', mask.at[0].set(False))
  moved = jnp.sqrt(sum(jnp.sum((a - b) ** 2) for a, b in zip(
      jax.tree_util.tree_leaves(want), jax.tree_util.tree_leaves(without))))
  assert float(moved) <= clip * (1 + 1e-5)


def test_a_layer_the_tape_cannot_record_trains_with_vmap():
  model = registry.build(f'{FILE}:RematNet', 10)
  params = checks.inspect(model, (8, 8, 1), 10, 'RematNet')['params']
  used, note = dp_step.covered_implementation(model.apply, params, (8, 8, 1), 'fast')
  assert used == 'vmap' and "instead of 'fast'" in note


def test_the_users_model_trains_predicts_and_reports_its_clipping_path(tmp_path,
                                                                       monkeypatch):
  summary = api.train(_config(TINY, **{'training.per_example_grads': 'fast'}),
                      str(tmp_path / 'run'))
  assert summary['status'] == 'complete' and summary['model'] == TINY
  privacy = run_files.read_json(str(tmp_path / 'run'), run_files.PRIVACY)
  assert privacy['per_example_grads'] == 'fast'
  assert 'generic' in privacy['per_example_grads_note']
  # The export names the file by its absolute path: --predict works from elsewhere.
  monkeypatch.chdir(tmp_path)
  images = np.zeros((2, 8, 8, 1), np.uint8)
  rows = api.predict(str(tmp_path / 'run'), images)
  assert len(rows) == 2 and all(r['class'] in [str(i) for i in range(10)] for r in rows)


def test_batchnorm_anywhere_is_refused_naming_the_layer_before_compiling(tmp_path):
  with pytest.raises(api.Error, match="layer 'block1/BatchNorm_0' is a BatchNorm"):
    api.train(_config(f'{FILE}:BatchNormNet'), str(tmp_path), dry_run=True)
  assert not (tmp_path / 'plan.json').exists()
  # The command line: one error line, exit 2.
  proc = subprocess.run(
      [sys.executable, 'launch.py', '--config=configs/base.py',  # no model kwargs
       '--config.training.num_steps=10', f'--config.model.name={FILE}:BatchNormNet',
       f'--workdir={tmp_path / "cli"}', '--dry_run'], cwd=ROOT, capture_output=True, text=True, timeout=300,
      env=dict(os.environ, JAX_PLATFORMS='cpu'), check=False)
  assert proc.returncode == 2, proc.stderr[-2000:]
  lines = proc.stderr.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith('error: ') and 'invariant 5' in lines[0]


@pytest.mark.parametrize('name, message', [
    (f'{FILE}:Missing', "defines no 'Missing'; its Flax modules: .*'TinyNet'"),
    ('tests/models/no_such_file.py:Net', 'is not a file'),
    ('no_such_package.models:Net', "cannot import 'no_such_package.models'"),
    (f'{FILE}:NoTrainingFlag', 'must take is_training'),
    ('resnet9000', r"not a known model; choose one of .*'cnn'.*path/to/file.py:MyModel"),
])
def test_a_model_name_that_does_not_work_says_why(name, message, tmp_path):
  with pytest.raises(api.Error, match=message):
    api.train(_config(name), str(tmp_path), dry_run=True)


def test_the_configs_model_kwargs_build_it_or_are_named(tmp_path):
  plan = api.train(_config(TINY, **{'model.kwargs': {'width': 2}}), str(tmp_path / 'a'),
                   dry_run=True)
  assert plan['num_params'] == (9 * 2 + 2) + 2 + 2 * 2 + (8 * 8 * 2 * 10 + 10)
  config = api.config('configs/quickstart.py', {'model.name': TINY})
  with pytest.raises(api.Error, match=r"do not fit model .*it takes num_classes and "
                     r"\['width'\]"):
    api.train(config, str(tmp_path / 'b'), dry_run=True)  # quickstart's: channels...
