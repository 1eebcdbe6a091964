"""Tests for WandbLogger: disabled imports nothing, offline writes, failures."""
import glob
import os
import subprocess
import sys
import textwrap

import ml_collections
import pytest

from image_classification.reporting import wandb_logger

REPO = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))


@pytest.fixture(autouse=True)
def _wandb_env(tmp_path, monkeypatch):
  monkeypatch.setenv('WANDB_MODE', 'offline')
  monkeypatch.setenv('WANDB_SILENT', 'true')
  monkeypatch.setenv('WANDB_DIR', str(tmp_path / 'wandb_dir'))
  monkeypatch.setenv('WANDB_CACHE_DIR', str(tmp_path / 'wandb_cache'))
  monkeypatch.setenv('WANDB_CONFIG_DIR', str(tmp_path / 'wandb_config'))
  monkeypatch.setenv('WANDB_DATA_DIR', str(tmp_path / 'wandb_data'))


def _config(mode):
  config = ml_collections.ConfigDict()
  config.seed = 0
  config.privacy = ml_collections.ConfigDict({'target_epsilon': 4.0})
  config.wandb = ml_collections.ConfigDict(
      {'mode': mode, 'project': 'test-project', 'entity': ''})
  return config


class _Warnings:
  """Counts absl warnings from the logger module."""

  def __init__(self, monkeypatch):
    self.messages = []
    monkeypatch.setattr(wandb_logger.logging, 'warning',
                        lambda msg, *args: self.messages.append(msg % args))


def test_disabled_imports_nothing(tmp_path):
  code = textwrap.dedent(f"""
      import sys
      import ml_collections
      from image_classification.reporting import wandb_logger
      config = ml_collections.ConfigDict(
          {{'wandb': {{'mode': 'disabled', 'project': 'p', 'entity': ''}}}})
      logger = wandb_logger.WandbLogger(config, {str(tmp_path)!r})
      logger.log_metrics({{'train_loss': 1.0}}, step=1)
      logger.log_privacy({{'epsilon': 1.0}})
      logger.log_summary({{'test_accuracy': 0.5}})
      logger.close()
      assert not logger.active
      assert 'wandb' not in sys.modules, 'wandb was imported'
      print('ok')
      """)
  result = subprocess.run([sys.executable, '-c', code], cwd=REPO,
                          capture_output=True, text=True, timeout=120,
                          check=False)
  assert result.returncode == 0, result.stderr
  assert result.stdout.strip() == 'ok'
  assert not os.listdir(tmp_path)


def test_disabled_and_inactive_never_call_wandb(tmp_path, monkeypatch):
  monkeypatch.setitem(sys.modules, 'wandb', None)  # Any import would fail.
  warnings = _Warnings(monkeypatch)
  for logger in (wandb_logger.WandbLogger(_config('disabled'), str(tmp_path)),
                 wandb_logger.WandbLogger(_config('online'), str(tmp_path),
                                          active=False)):
    logger.log_metrics({'train_loss': 1.0}, step=1)
    logger.close()
    assert not logger.active
  assert not warnings.messages


def test_offline_writes_under_workdir(tmp_path):
  workdir = str(tmp_path / 'run')
  with wandb_logger.WandbLogger(_config('offline'), workdir) as logger:
    assert logger.active
    logger.log_metrics({'step': 1, 'train_loss': 2.5, 'epsilon': 0.1,
                        'tag': 'x', 'ignored': [1, 2]}, step=1)
    logger.log_metrics({'test_accuracy': 0.5, 'epsilon': 0.2}, step=2)
    logger.log_privacy({'noise_multiplier': 1.1, 'accountant': 'rdp'})
    logger.log_summary({'test_accuracy': 0.5, 'epsilon': float('inf')})
  assert not logger.active
  logger.close()  # Twice is fine.
  runs = glob.glob(os.path.join(workdir, 'wandb', 'offline-run-*'))
  assert len(runs) == 1
  assert glob.glob(os.path.join(runs[0], '*.wandb'))
  assert not os.path.exists(tmp_path / 'wandb_dir' / 'wandb')


def test_init_failure_warns_once_and_does_not_raise(tmp_path, monkeypatch):
  wandb = pytest.importorskip('wandb')

  def failing_init(**kwargs):
    raise RuntimeError('no network')

  monkeypatch.setattr(wandb, 'init', failing_init)
  warnings = _Warnings(monkeypatch)
  logger = wandb_logger.WandbLogger(_config('online'), str(tmp_path))
  assert not logger.active
  logger.log_metrics({'train_loss': 1.0}, step=1)
  logger.log_privacy({'epsilon': 1.0})
  logger.log_summary({'test_accuracy': 0.5})
  logger.close()
  assert len(warnings.messages) == 1
  assert 'no network' in warnings.messages[0]


def test_log_failure_turns_logger_off(tmp_path, monkeypatch):
  wandb = pytest.importorskip('wandb')

  class BrokenRun:
    finished = 0
    logged = 0

    def log(self, data, step):
      BrokenRun.logged += 1
      raise OSError('disk full')

    def finish(self, exit_code=0):
      BrokenRun.finished += 1

  monkeypatch.setattr(wandb, 'init', lambda **kwargs: BrokenRun())
  warnings = _Warnings(monkeypatch)
  logger = wandb_logger.WandbLogger(_config('offline'), str(tmp_path))
  assert logger.active
  logger.log_metrics({'train_loss': 1.0}, step=1)
  logger.log_metrics({'train_loss': 0.5}, step=2)
  logger.log_summary({'test_accuracy': 0.5})
  logger.close()
  assert not logger.active
  assert BrokenRun.logged == 1 and BrokenRun.finished == 1
  assert len(warnings.messages) == 1 and 'disk full' in warnings.messages[0]


def test_unknown_mode_warns(tmp_path, monkeypatch):
  warnings = _Warnings(monkeypatch)
  logger = wandb_logger.WandbLogger(_config('sometimes'), str(tmp_path))
  logger.log_metrics({'train_loss': 1.0}, step=1)
  assert not logger.active
  assert len(warnings.messages) == 1 and 'sometimes' in warnings.messages[0]


def test_scalars_keeps_numbers_and_strings():
  np = pytest.importorskip('numpy')
  row = {'a': np.float32(1.5), 'b': np.array(2), 'c': [1], 'd': 'x',
         'e': float('nan'), 'f': True}
  assert wandb_logger._scalars(row) == {'a': 1.5, 'b': 2, 'd': 'x', 'f': True}
