"""Tests for sweeps: loading, naming, overrides, running, resuming, tables."""
import csv
import os
import textwrap

import pytest

from configs import base
from image_classification.reporting import sweep
from tests.reporting import fake_runs

REPO = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))

EPSILON_SWEEP = """
from image_classification.reporting import sweep

def get_sweep():
  return sweep.grid({'privacy.target_epsilon': [1, 2.0, 4.0, 8.0]})
"""


def _write(path, text):
  path.write_text(textwrap.dedent(text))
  return str(path)


class FakeTrainer:
  """Records calls; writes run files; fails for the epsilons in ``fail``."""

  def __init__(self, fail=()):
    self.calls = []
    self.fail = set(fail)

  def __call__(self, config, workdir):
    eps = config.privacy.target_epsilon
    self.calls.append((eps, workdir))
    if eps in self.fail:
      fake_runs.write_run(workdir, epsilon=eps, complete=False)
      raise RuntimeError(f'boom at epsilon {eps}')
    fake_runs.write_run(workdir, epsilon=eps, accuracy=0.5 + eps / 20,
                        model=config.model.name, dataset=config.data.name)


def _read_csv(path):
  with open(path, newline='') as f:
    return list(csv.DictReader(f))


def test_run_sweep_writes_tables_and_plot(tmp_path):
  sweep_file = _write(tmp_path / 'eps.py', EPSILON_SWEEP)
  workdir = str(tmp_path / 'sweep')
  trainer = FakeTrainer()
  rows = sweep.run_sweep(base.get_config(), sweep_file, workdir, trainer)

  assert [c[0] for c in trainer.calls] == [1.0, 2.0, 4.0, 8.0]
  assert all(isinstance(c[0], float) for c in trainer.calls)
  assert trainer.calls[0][1] == os.path.join(workdir,
                                             'privacy.target_epsilon=1')
  assert [r['status'] for r in rows] == ['complete'] * 4
  assert rows[3]['test_accuracy'] == pytest.approx(0.9)

  table = _read_csv(os.path.join(workdir, 'sweep.csv'))
  assert [r['privacy.target_epsilon'] for r in table] == ['1', '2.0', '4.0',
                                                           '8.0']
  assert list(table[0]) == ['point', 'privacy.target_epsilon', 'status',
                            'test_accuracy', 'epsilon', 'delta', 'steps',
                            'wall_time_sec', 'non_private', 'error']
  assert float(table[1]['epsilon']) == 2.0
  md = open(os.path.join(workdir, 'sweep.md')).read()
  assert 'privacy.target_epsilon=8.0' in md
  assert '90.00' in md
  assert 'do not count' in md
  assert os.path.getsize(os.path.join(workdir, 'sweep.png')) > 1000


def test_rerun_skips_finished_points(tmp_path):
  sweep_file = _write(tmp_path / 'eps.py', EPSILON_SWEEP)
  workdir = str(tmp_path / 'sweep')
  sweep.run_sweep(base.get_config(), sweep_file, workdir, FakeTrainer())
  again = FakeTrainer()
  rows = sweep.run_sweep(base.get_config(), sweep_file, workdir, again)
  assert not again.calls
  assert [r['status'] for r in rows] == ['complete'] * 4


def test_crashed_point_is_reported_and_rerun(tmp_path):
  sweep_file = _write(tmp_path / 'eps.py', EPSILON_SWEEP)
  workdir = str(tmp_path / 'sweep')
  flaky = FakeTrainer(fail={2.0})
  rows = sweep.run_sweep(base.get_config(), sweep_file, workdir, flaky)
  assert len(flaky.calls) == 4  # The crash did not stop the other points.
  failed = [r for r in rows if r['status'] == 'failed']
  assert [r['point'] for r in failed] == ['privacy.target_epsilon=2.0']
  assert 'boom at epsilon 2.0' in failed[0]['error']
  md = open(os.path.join(workdir, 'sweep.md')).read()
  assert 'Failed points' in md and 'boom at epsilon 2.0' in md
  table = _read_csv(os.path.join(workdir, 'sweep.csv'))
  assert table[1]['status'] == 'failed'
  assert os.path.exists(os.path.join(workdir, 'privacy.target_epsilon=2.0',
                                     sweep.ERROR_FILE))

  fixed = FakeTrainer()
  rows = sweep.run_sweep(base.get_config(), sweep_file, workdir, fixed)
  assert [c[0] for c in fixed.calls] == [2.0]
  assert [r['status'] for r in rows] == ['complete'] * 4
  assert not os.path.exists(os.path.join(
      workdir, 'privacy.target_epsilon=2.0', sweep.ERROR_FILE))


def test_print_only_prints_commands_and_runs_nothing(tmp_path, capsys):
  sweep_file = _write(tmp_path / 'eps.py', EPSILON_SWEEP)
  workdir = str(tmp_path / 'sweep')
  trainer = FakeTrainer()
  rows = sweep.run_sweep(
      base.get_config(), sweep_file, workdir, trainer, print_only=True,
      base_command='python launch.py --config=configs/quickstart.py')
  lines = capsys.readouterr().out.strip().splitlines()
  assert len(lines) == 4 and len(rows) == 4
  assert lines[1] == (
      'python launch.py --config=configs/quickstart.py '
      '--config.privacy.target_epsilon=2.0 '
      f'--workdir={workdir}/privacy.target_epsilon=2.0')
  assert not trainer.calls
  assert not os.path.exists(workdir)


def test_print_only_quotes_strings(tmp_path, capsys):
  sweep_file = _write(tmp_path / 's.py', """
      def get_sweep():
        return [{'model.name': 'wide resnet', 'seed': 3}]
      """)
  sweep.run_sweep(base.get_config(), sweep_file, str(tmp_path / 'w'),
                  FakeTrainer(), print_only=True)
  line = capsys.readouterr().out.strip()
  assert line.startswith("python launch.py '--config.model.name=wide resnet' "
                         '--config.seed=3 ')


def test_base_command_from_argv():
  argv = ['launch.py', '--config=configs/quickstart.py', '--sweep',
          'configs/sweeps/quickstart_epsilon.py', '--config.seed=1',
          '--workdir=/tmp/w', '--print_only', '--config.model.name=a b']
  assert sweep.base_command_from_argv(argv) == (
      "python launch.py --config=configs/quickstart.py --config.seed=1 "
      "'--config.model.name=a b'")
  assert sweep.base_command_from_argv(['launch.py', '--noprint_only']) == (
      'python launch.py')


def test_bad_sweep_files(tmp_path):
  config = base.get_config()
  missing = str(tmp_path / 'nope.py')
  with pytest.raises(sweep.SweepError, match='nope.py'):
    sweep.load_sweep(missing, config)

  no_fn = _write(tmp_path / 'no_fn.py', 'POINTS = []\n')
  with pytest.raises(sweep.SweepError, match='no_fn.py.*no get_sweep'):
    sweep.load_sweep(no_fn, config)

  broken = _write(tmp_path / 'broken.py', 'def get_sweep(:\n')
  with pytest.raises(sweep.SweepError, match='broken.py.*failed to load'):
    sweep.load_sweep(broken, config)

  typo = _write(tmp_path / 'typo.py', """
      def get_sweep():
        return [{'privacy.target_epsilon': 1.0}, {'privacy.target_epsion': 2.0}]
      """)
  with pytest.raises(sweep.SweepError) as e:
    sweep.load_sweep(typo, config)
  message = str(e.value)
  assert 'typo.py' in message and 'point 1' in message
  assert 'target_epsion' in message and 'target_epsilon' in message

  wrong_type = _write(tmp_path / 'wrong_type.py', """
      def get_sweep():
        return [{'training.batch_size': 'large'}]
      """)
  with pytest.raises(sweep.SweepError, match='wrong_type.py.*batch_size'):
    sweep.load_sweep(wrong_type, config)

  not_list = _write(tmp_path / 'not_list.py', """
      def get_sweep():
        return {'seed': 1}
      """)
  with pytest.raises(sweep.SweepError, match='not_list.py.*list'):
    sweep.load_sweep(not_list, config)

  trainer = FakeTrainer()
  with pytest.raises(sweep.SweepError, match='typo.py'):
    sweep.run_sweep(config, typo, str(tmp_path / 'w'), trainer)
  assert not trainer.calls


def test_duplicate_folder_names_are_refused(tmp_path):
  dup = _write(tmp_path / 'dup.py', """
      def get_sweep():
        return [{'model.name': 'a/b'}, {'model.name': 'a_b'}]
      """)
  with pytest.raises(sweep.SweepError, match='share the folder name'):
    sweep.load_sweep(dup)


def test_grid_zipped_product():
  points = sweep.grid({'privacy.target_epsilon': [1.0, 8.0]}, seed=[0, 1])
  assert points == [
      {'privacy.target_epsilon': 1.0, 'seed': 0},
      {'privacy.target_epsilon': 1.0, 'seed': 1},
      {'privacy.target_epsilon': 8.0, 'seed': 0},
      {'privacy.target_epsilon': 8.0, 'seed': 1}]
  assert sweep.zipped({'a.b': [1, 2], 'c': ['x', 'y']}) == [
      {'a.b': 1, 'c': 'x'}, {'a.b': 2, 'c': 'y'}]
  assert sweep.product(sweep.grid(seed=[0, 1]), [{'a': 1}, {'b': 2}]) == [
      {'seed': 0, 'a': 1}, {'seed': 0, 'b': 2},
      {'seed': 1, 'a': 1}, {'seed': 1, 'b': 2}]
  with pytest.raises(sweep.SweepError, match='length'):
    sweep.zipped({'a': [1, 2], 'b': [1]})
  with pytest.raises(sweep.SweepError, match='list'):
    sweep.grid(seed=3)
  with pytest.raises(sweep.SweepError, match='twice'):
    sweep.product([{'a': 1}], [{'a': 2}])


def test_point_name_is_stable_and_safe():
  point = {'privacy.target_epsilon': 1.0, 'training.optimizer.name': 'adam'}
  name = sweep.point_name(point)
  assert name == 'privacy.target_epsilon=1.0,training.optimizer.name=adam'
  assert sweep.point_name(dict(point)) == name
  assert sweep.point_name({'privacy.delta': 1e-5}) == 'privacy.delta=1e-05'
  assert sweep.point_name({}) == 'base'
  weird = sweep.point_name({'data.path': '/tmp/x y/../z'})
  assert '/' not in weird and ' ' not in weird
  long_a = sweep.point_name({'data.path': 'a' * 300})
  long_b = sweep.point_name({'data.path': 'a' * 299 + 'b'})
  assert len(long_a) <= 120 and long_a != long_b


def test_apply_overrides_copies_and_checks_types():
  config = base.get_config()
  new = sweep.apply_overrides(config, {'privacy.target_epsilon': 2,
                                       'privacy.noise_multiplier': 1.5,
                                       'training.optimizer.name': 'adam'})
  assert new.privacy.target_epsilon == 2.0
  assert isinstance(new.privacy.target_epsilon, float)
  assert new.privacy.noise_multiplier == 1.5
  assert new.training.optimizer.name == 'adam'
  assert config.privacy.target_epsilon == 4.0
  assert config.privacy.noise_multiplier is None
  assert config.training.optimizer.name == 'sgd'
  with pytest.raises(sweep.SweepError, match='training.batch_size'):
    sweep.apply_overrides(config, {'training.batch_size': 2.5})
  with pytest.raises(sweep.SweepError, match='group of fields'):
    sweep.apply_overrides(config, {'training.optimizer': 'adam'})
  with pytest.raises(sweep.SweepError, match='is a value'):
    sweep.apply_overrides(config, {'seed.x': 1})


def test_quickstart_sweep_file_loads():
  quickstart = pytest.importorskip('configs.quickstart')
  points = sweep.load_sweep(
      os.path.join(REPO, 'configs', 'sweeps', 'quickstart_epsilon.py'),
      quickstart.get_config())
  assert [p['privacy.target_epsilon'] for p in points] == [1.0, 2.0, 4.0, 8.0]


def test_plot_several_fields(tmp_path):
  def rows(points):
    return [{'point': sweep.point_name(p), 'overrides': p,
             'test_accuracy': 0.5 + 0.01 * i, 'epsilon': 1.0 + i,
             'non_private': False} for i, p in enumerate(points)]

  numeric = sweep.grid({'training.optimizer.name': ['sgd', 'adam'],
                        'training.batch_size': [64, 256, 1024]})
  path = sweep.plot_sweep(rows(numeric), list(numeric[0]),
                          str(tmp_path / 'numeric.png'))
  assert os.path.getsize(path) > 1000
  words = sweep.grid({'training.optimizer.name': ['sgd', 'adam']})
  path = sweep.plot_sweep(rows(words), list(words[0]),
                          str(tmp_path / 'words.png'))
  assert os.path.getsize(path) > 1000


def test_every_point_is_checked_before_the_first_trains(tmp_path):
  from configs import quickstart  # pylint: disable=g-import-not-at-top
  from image_classification.training import loop  # pylint: disable=g-import-not-at-top
  sweep_file = _write(tmp_path / 's.py', """
      def get_sweep():
        return [{'privacy.target_epsilon': 4.0},
                {'privacy.target_epsilon': 0.001},
                {'training.eval_batch_size': 0}]
      """)
  trainer = FakeTrainer()
  workdir = str(tmp_path / 'w')
  config = quickstart.get_config()
  with pytest.raises(sweep.SweepError) as e:
    sweep.run_sweep(config, sweep_file, workdir, trainer, check_fn=loop.check)
  message = str(e.value)
  assert message.startswith('2 of 3 sweep points have a bad config; nothing was '
                            'trained.')
  assert ('point privacy.target_epsilon=0.001: config.privacy.target_epsilon=0.001: '
          'no noise multiplier') in message
  assert 'point training.eval_batch_size=0: config.training.eval_batch_size=0' in message
  assert not trainer.calls and not os.path.exists(workdir)
  # print_only checks too: a command line for a bad point would only fail later.
  with pytest.raises(sweep.SweepError):
    sweep.run_sweep(config, sweep_file, workdir, trainer, print_only=True,
                    check_fn=loop.check)


def test_points_already_complete_are_not_checked_again(tmp_path):
  sweep_file = _write(tmp_path / 's.py', EPSILON_SWEEP)
  workdir = str(tmp_path / 'w')
  sweep.run_sweep(base.get_config(), sweep_file, workdir, FakeTrainer())
  checked = []
  sweep.run_sweep(base.get_config(), sweep_file, workdir, FakeTrainer(),
                  check_fn=lambda c: checked.append(c.privacy.target_epsilon))
  assert not checked
