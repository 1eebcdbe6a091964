"""The experiment configs built from shared builders (configs/common.py and the family
files such as configs/cifar10_wrn_16_4.py) are exactly the configs they were written
out as before: every config file's get_config() matches a frozen snapshot
(tests/data_files/config_snapshots.json, made from the hand-written files), each thin
file equals its family file with the `:eps=X` argument, and launch.py accepts that form.
"""
import glob
import importlib
import json
import os
import subprocess
import sys

import ml_collections
import pytest

from configs import common

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SNAPSHOT = os.path.join(ROOT, 'tests', 'data_files', 'config_snapshots.json')
with open(SNAPSHOT) as _f:
  SNAPSHOTS = json.load(_f)

# Thin file = family file:its argument.
THIN = dict(line.split('=', 1) for line in (
    'cifar10_wrn_16_4_eps1=cifar10_wrn_16_4:eps=1',
    'cifar10_wrn_16_4_eps2=cifar10_wrn_16_4:eps=2',
    'cifar10_wrn_16_4_eps4=cifar10_wrn_16_4:eps=4',
    'cifar10_wrn_16_4_eps8=cifar10_wrn_16_4:eps=8',
    'cifar10_wrn_40_4_eps8=cifar10_wrn_16_4:eps=8,depth=40',
    'cifar10_wrn_28_10_eps1_finetune=cifar_wrn_28_10_finetune:eps=1',
    'cifar10_wrn_28_10_eps8_finetune=cifar_wrn_28_10_finetune:eps=8',
    'cifar100_wrn_28_10_eps1_finetune=cifar_wrn_28_10_finetune:eps=1,dataset=cifar100',
    'cifar100_wrn_28_10_eps8_finetune=cifar_wrn_28_10_finetune:eps=8,dataset=cifar100',
    'imagenet_nfnet_f3_eps1_finetune=imagenet_nfnet_f3_finetune:eps=1',
    'imagenet_nfnet_f3_eps8_finetune=imagenet_nfnet_f3_finetune:eps=8',
))


def flat_repr(d, prefix=''):
  """{'a': {'b': 1.0}} -> {'a.b': '1.0'}: repr tells 1 from 1.0 and (16,) from [16]."""
  out = {}
  for k, v in d.items():
    if isinstance(v, dict):
      out.update(flat_repr(v, f'{prefix}{k}.'))
    else:
      out[f'{prefix}{k}'] = repr(v)
  return out


def _load(name, arg=None):
  module = importlib.import_module(f'configs.{name}')
  return module.get_config() if arg is None else module.get_config(arg)


def test_every_config_file_has_a_snapshot():
  names = {os.path.splitext(os.path.basename(p))[0]
           for p in glob.glob(os.path.join(ROOT, 'configs', '*.py'))}
  families = {spec.split(':')[0] for spec in THIN.values()}
  assert set(SNAPSHOTS) == names - families - {'__init__', 'base', 'common'}


@pytest.mark.parametrize('name', sorted(SNAPSHOTS))
def test_config_is_unchanged(name):
  """If quickstart is retuned, quickstart_audit(_nonprivate) changes with it: the
  bounds documented in docs/audit.md were measured with the snapshot's values, so pin
  those in configs/quickstart_audit.py rather than updating the snapshot."""
  got = flat_repr(_load(name).to_dict())
  want = SNAPSHOTS[name]
  diff = {k: (want.get(k), got.get(k)) for k in set(got) | set(want)
          if want.get(k) != got.get(k)}
  assert not diff, f'{name}: field: (snapshot, now) {diff}'


@pytest.mark.parametrize('name', sorted(THIN))
def test_thin_file_equals_its_family_with_the_argument(name):
  family, arg = THIN[name].split(':', 1)
  assert _load(family, arg).to_dict() == _load(name).to_dict()
  assert flat_repr(_load(family, arg).to_dict()) == SNAPSHOTS[name]


def test_a_family_needs_a_known_epsilon():
  with pytest.raises(ValueError, match='eps= one of 1, 2, 4, 8'):
    _load('cifar10_wrn_16_4')
  with pytest.raises(ValueError, match='eps= one of 1, 2, 4, 8'):
    _load('cifar10_wrn_16_4', 'eps=3')
  with pytest.raises(ValueError, match="'epsilon' is not one of"):
    _load('cifar10_wrn_16_4', 'epsilon=1')


def test_parse_arg_converts_to_the_defaults_types():
  args = common.parse_arg('eps=1, augmult=16,name=x,flag', eps=0.0, augmult=1,
                          name='a', flag=False, other=True)
  assert isinstance(args, ml_collections.ConfigDict)
  assert args.to_dict() == {'eps': 1.0, 'augmult': 16, 'name': 'x', 'flag': True,
                            'other': True}
  assert isinstance(args.eps, float) and isinstance(args.augmult, int)
  assert common.parse_arg(None, eps=2.0).eps == 2.0
  assert common.parse_arg('', eps=2.0).eps == 2.0
  assert common.parse_arg('other=false', other=True).other is False
  with pytest.raises(ValueError, match='expected int'):
    common.parse_arg('augmult=1.5', augmult=1)
  with pytest.raises(ValueError, match='expected true or false'):
    common.parse_arg('flag=maybe', flag=False)
  with pytest.raises(ValueError, match='needs a value'):
    common.parse_arg('eps', eps=1.0)
  with pytest.raises(ValueError, match="'eta' is not one of"):
    common.parse_arg('eta=1', eps=1.0)


def test_launch_dry_run_accepts_the_argument_form(tmp_path):
  """The text after ':' reaches get_config(), and overrides still apply on top."""
  workdir = str(tmp_path / 'plan')
  env = dict(os.environ, JAX_PLATFORMS='cpu', WANDB_MODE='disabled')
  proc = subprocess.run(
      [sys.executable, 'launch.py', '--config=configs/cifar10_wrn_16_4.py:eps=1',
       '--config.training.log_every_steps=7', f'--workdir={workdir}', '--dry_run'],
      cwd=ROOT, env=env, capture_output=True, text=True, timeout=400, check=False)
  assert proc.returncode == 0, proc.stderr[-3000:]
  with open(os.path.join(workdir, 'plan.json')) as f:
    plan = json.load(f)
  assert plan['steps'] == 875 and plan['noise_multiplier'] == 10.0
  assert plan['expected_batch_size'] == 4096 and plan['delta'] == 1e-5
