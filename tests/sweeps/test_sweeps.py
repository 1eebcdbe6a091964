"""Tests for sweeps: loading, naming, overrides, running, resuming, tables."""
import csv
import os
import textwrap

from absl import flags
from ml_collections import config_flags
import pytest

from configs import base
from image_classification.workdir import run_files
from image_classification import sweeps
from image_classification.reporting import report
from image_classification.sweeps import runner as sweep_runner
from image_classification.sweeps import summary as sweep_summary
from image_classification.workdir import run_control
from tests.reporting import fake_runs

REPO = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))

EPSILON_SWEEP = """
from image_classification import sweeps

def get_sweep():
  return sweeps.grid({'privacy.target_epsilon': [1, 2.0, 4.0, 8.0]})
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
  rows = sweep_runner.run_sweep(base.get_config(), sweep_file, workdir, trainer,
                          check_fn=None)

  assert [c[0] for c in trainer.calls] == [1.0, 2.0, 4.0, 8.0]
  assert all(isinstance(c[0], float) for c in trainer.calls)
  assert trainer.calls[0][1] == os.path.join(workdir,
                                             'privacy.target_epsilon=1')
  assert [r['status'] for r in rows] == ['complete'] * 4
  assert rows[3]['test_accuracy'] == pytest.approx(0.9)

  table = _read_csv(os.path.join(workdir, run_files.SWEEP_CSV))
  assert [r['privacy.target_epsilon'] for r in table] == ['1', '2.0', '4.0',
                                                           '8.0']
  assert list(table[0]) == ['point', 'privacy.target_epsilon', 'status',
                            'test_accuracy', 'epsilon', 'delta', 'steps',
                            'wall_time_sec', 'non_private', 'error']
  assert float(table[1]['epsilon']) == 2.0
  md = open(os.path.join(workdir, run_files.SWEEP_MD)).read()
  assert 'privacy.target_epsilon=8.0' in md
  assert '90.00' in md
  assert 'do not count' in md
  assert os.path.getsize(os.path.join(workdir, run_files.SWEEP_PNG)) > 1000


def test_rerun_skips_finished_points(tmp_path):
  sweep_file = _write(tmp_path / 'eps.py', EPSILON_SWEEP)
  workdir = str(tmp_path / 'sweep')
  sweep_runner.run_sweep(base.get_config(), sweep_file, workdir, FakeTrainer(),
                   check_fn=None)
  again = FakeTrainer()
  rows = sweep_runner.run_sweep(base.get_config(), sweep_file, workdir, again,
                          check_fn=None)
  assert not again.calls
  assert [r['status'] for r in rows] == ['complete'] * 4


def test_crashed_point_is_reported_and_rerun(tmp_path):
  sweep_file = _write(tmp_path / 'eps.py', EPSILON_SWEEP)
  workdir = str(tmp_path / 'sweep')
  flaky = FakeTrainer(fail={2.0})
  rows = sweep_runner.run_sweep(base.get_config(), sweep_file, workdir, flaky,
                          check_fn=None)
  assert len(flaky.calls) == 4  # The crash did not stop the other points.
  failed = [r for r in rows if r['status'] == 'failed']
  assert [r['point'] for r in failed] == ['privacy.target_epsilon=2.0']
  assert 'boom at epsilon 2.0' in failed[0]['error']
  md = open(os.path.join(workdir, run_files.SWEEP_MD)).read()
  assert 'Failed points' in md and 'boom at epsilon 2.0' in md
  table = _read_csv(os.path.join(workdir, run_files.SWEEP_CSV))
  assert table[1]['status'] == 'failed'
  assert os.path.exists(os.path.join(workdir, 'privacy.target_epsilon=2.0',
                                     run_files.SWEEP_ERROR))

  fixed = FakeTrainer()
  rows = sweep_runner.run_sweep(base.get_config(), sweep_file, workdir, fixed,
                          check_fn=None)
  assert [c[0] for c in fixed.calls] == [2.0]
  assert [r['status'] for r in rows] == ['complete'] * 4
  assert not os.path.exists(os.path.join(
      workdir, 'privacy.target_epsilon=2.0', run_files.SWEEP_ERROR))


def test_print_only_prints_commands_and_runs_nothing(tmp_path, capsys):
  sweep_file = _write(tmp_path / 'eps.py', EPSILON_SWEEP)
  workdir = str(tmp_path / 'sweep')
  trainer = FakeTrainer()
  rows = sweep_runner.run_sweep(
      base.get_config(), sweep_file, workdir, trainer, print_only=True, check_fn=None,
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
  sweep_runner.run_sweep(base.get_config(), sweep_file, str(tmp_path / 'w'),
                   FakeTrainer(), print_only=True, check_fn=None)
  line = capsys.readouterr().out.strip()
  assert line.startswith("python launch.py '--config.model.name=wide resnet' "
                         '--config.seed=3 ')


def _launch_flags(argv):
  """launch.py's sweep-related flags, parsed from ``argv`` as absl would."""
  flag_values = flags.FlagValues()
  # sys_argv: ml_collections defines one flag per --config.a.b override it finds there.
  config_flags.DEFINE_config_file('config', None, 'config', flag_values=flag_values,
                                  lock_config=True, sys_argv=argv)
  flags.DEFINE_string('workdir', None, '', flag_values=flag_values)
  flags.DEFINE_string('sweep', None, '', flag_values=flag_values)
  flags.DEFINE_bool('print_only', False, '', flag_values=flag_values)
  flags.DEFINE_integer('host_devices', 0, '', flag_values=flag_values)
  flag_values(argv)
  return flag_values


def test_base_command_from_flags():
  """The launching command less --sweep, --workdir and --print_only, from absl's
  record of the flags the command line set (``present``), not from argv."""
  quickstart = os.path.join(REPO, 'configs', 'quickstart.py')
  parsed = _launch_flags([
      'launch.py', f'--config={quickstart}', '--sweep',
      'configs/sweeps/quickstart_epsilon.py', '--config.seed=1', '--workdir=/tmp/w',
      '--print_only', '--config.model.name=a b', '--host_devices=2',
      '--config.model.kwargs.channels=(8,16)', '--config.privacy.target_epsilon=2',
      '--noconfig.privacy.insecure_seeded_noise'])
  # Values as config_flags parsed them: a tuple in one flag, an int into a float field
  # as 2.0, a bool as True/False.
  assert sweep_runner.base_command_from_flags(parsed, 'launch.py') == (
      f"python launch.py --config={quickstart} --config.seed=1 "
      "'--config.model.name=a b' '--config.model.kwargs.channels=(8, 16)' "
      '--config.privacy.target_epsilon=2.0 --config.privacy.insecure_seeded_noise=False '
      '--host_devices=2')
  parsed = _launch_flags(['/x/launch.py', f'--config={quickstart}', '--noprint_only'])
  assert sweep_runner.base_command_from_flags(parsed, '/x/launch.py') == (
      f'python /x/launch.py --config={quickstart}')


def test_bad_sweep_files(tmp_path):
  config = base.get_config()
  missing = str(tmp_path / 'nope.py')
  with pytest.raises(sweeps.SweepError, match='nope.py'):
    sweeps.load_sweep(missing, config)

  no_fn = _write(tmp_path / 'no_fn.py', 'POINTS = []\n')
  with pytest.raises(sweeps.SweepError, match='no_fn.py.*no get_sweep'):
    sweeps.load_sweep(no_fn, config)

  broken = _write(tmp_path / 'broken.py', 'def get_sweep(:\n')
  with pytest.raises(sweeps.SweepError, match='broken.py.*failed to load'):
    sweeps.load_sweep(broken, config)

  typo = _write(tmp_path / 'typo.py', """
      def get_sweep():
        return [{'privacy.target_epsilon': 1.0}, {'privacy.target_epsion': 2.0}]
      """)
  with pytest.raises(sweeps.SweepError) as e:
    sweeps.load_sweep(typo, config)
  message = str(e.value)
  assert 'typo.py' in message and 'point 1' in message
  assert 'target_epsion' in message and 'target_epsilon' in message

  wrong_type = _write(tmp_path / 'wrong_type.py', """
      def get_sweep():
        return [{'training.batch_size': 'large'}]
      """)
  with pytest.raises(sweeps.SweepError, match='wrong_type.py.*batch_size'):
    sweeps.load_sweep(wrong_type, config)

  not_list = _write(tmp_path / 'not_list.py', """
      def get_sweep():
        return {'seed': 1}
      """)
  with pytest.raises(sweeps.SweepError, match='not_list.py.*list'):
    sweeps.load_sweep(not_list, config)

  trainer = FakeTrainer()
  with pytest.raises(sweeps.SweepError, match='typo.py'):
    sweep_runner.run_sweep(config, typo, str(tmp_path / 'w'), trainer, check_fn=None)
  assert not trainer.calls


def test_duplicate_folder_names_are_refused(tmp_path):
  dup = _write(tmp_path / 'dup.py', """
      def get_sweep():
        return [{'model.name': 'a/b'}, {'model.name': 'a_b'}]
      """)
  with pytest.raises(sweeps.SweepError, match='share the folder name'):
    sweeps.load_sweep(dup)


def test_grid_zipped_product():
  points = sweeps.grid({'privacy.target_epsilon': [1.0, 8.0]}, seed=[0, 1])
  assert points == [
      {'privacy.target_epsilon': 1.0, 'seed': 0},
      {'privacy.target_epsilon': 1.0, 'seed': 1},
      {'privacy.target_epsilon': 8.0, 'seed': 0},
      {'privacy.target_epsilon': 8.0, 'seed': 1}]
  assert sweeps.zipped({'a.b': [1, 2], 'c': ['x', 'y']}) == [
      {'a.b': 1, 'c': 'x'}, {'a.b': 2, 'c': 'y'}]
  assert sweeps.product(sweeps.grid(seed=[0, 1]), [{'a': 1}, {'b': 2}]) == [
      {'seed': 0, 'a': 1}, {'seed': 0, 'b': 2},
      {'seed': 1, 'a': 1}, {'seed': 1, 'b': 2}]
  with pytest.raises(sweeps.SweepError, match='length'):
    sweeps.zipped({'a': [1, 2], 'b': [1]})
  with pytest.raises(sweeps.SweepError, match='list'):
    sweeps.grid(seed=3)
  with pytest.raises(sweeps.SweepError, match='twice'):
    sweeps.product([{'a': 1}], [{'a': 2}])


def test_point_name_is_stable_and_safe():
  point = {'privacy.target_epsilon': 1.0, 'training.optimizer.name': 'adam'}
  name = sweeps.point_name(point)
  assert name == 'privacy.target_epsilon=1.0,training.optimizer.name=adam'
  assert sweeps.point_name(dict(point)) == name
  assert sweeps.point_name({'privacy.delta': 1e-5}) == 'privacy.delta=1e-05'
  assert sweeps.point_name({}) == 'base'
  weird = sweeps.point_name({'data.path': '/tmp/x y/../z'})
  assert '/' not in weird and ' ' not in weird
  long_a = sweeps.point_name({'data.path': 'a' * 300})
  long_b = sweeps.point_name({'data.path': 'a' * 299 + 'b'})
  assert len(long_a) <= 120 and long_a != long_b


def test_apply_overrides_copies_and_checks_types():
  config = base.get_config()
  new = sweeps.apply_overrides(config, {'privacy.target_epsilon': 2,
                                        'privacy.noise_multiplier': 1.5,
                                        'training.optimizer.name': 'adam'})
  assert new.privacy.target_epsilon == 2.0
  assert isinstance(new.privacy.target_epsilon, float)
  assert new.privacy.noise_multiplier == 1.5
  assert new.training.optimizer.name == 'adam'
  assert config.privacy.target_epsilon == 4.0
  assert config.privacy.noise_multiplier is None
  assert config.training.optimizer.name == 'sgd'
  with pytest.raises(sweeps.SweepError, match='training.batch_size'):
    sweeps.apply_overrides(config, {'training.batch_size': 2.5})
  with pytest.raises(sweeps.SweepError, match='group of fields'):
    sweeps.apply_overrides(config, {'training.optimizer': 'adam'})
  with pytest.raises(sweeps.SweepError, match='is a value'):
    sweeps.apply_overrides(config, {'seed.x': 1})


def test_quickstart_sweep_file_loads():
  quickstart = pytest.importorskip('configs.quickstart')
  points = sweeps.load_sweep(
      os.path.join(REPO, 'configs', 'sweeps', 'quickstart_epsilon.py'),
      quickstart.get_config())
  assert [p['privacy.target_epsilon'] for p in points] == [1.0, 2.0, 4.0, 8.0]


def test_plot_several_fields(tmp_path):
  def rows(points):
    return [{'point': sweeps.point_name(p), 'overrides': p,
             'test_accuracy': 0.5 + 0.01 * i, 'epsilon': 1.0 + i,
             'non_private': False} for i, p in enumerate(points)]

  numeric = sweeps.grid({'training.optimizer.name': ['sgd', 'adam'],
                         'training.batch_size': [64, 256, 1024]})
  path = sweep_summary.plot_sweep(rows(numeric), list(numeric[0]),
                           str(tmp_path / 'numeric.png'))
  assert os.path.getsize(path) > 1000
  words = sweeps.grid({'training.optimizer.name': ['sgd', 'adam']})
  path = sweep_summary.plot_sweep(rows(words), list(words[0]),
                           str(tmp_path / 'words.png'))
  assert os.path.getsize(path) > 1000


def test_every_point_is_checked_before_the_first_trains(tmp_path):
  from configs import quickstart  # pylint: disable=g-import-not-at-top
  sweep_file = _write(tmp_path / 's.py', """
      def get_sweep():
        return [{'privacy.target_epsilon': 4.0},
                {'privacy.target_epsilon': 0.001},
                {'training.eval_batch_size': 0}]
      """)
  trainer = FakeTrainer()
  workdir = str(tmp_path / 'w')
  config = quickstart.get_config()
  with pytest.raises(sweeps.SweepError) as e:
    sweep_runner.run_sweep(config, sweep_file, workdir, trainer)  # checks with runs.check
  message = str(e.value)
  assert message.startswith('2 of 3 sweep points have a bad config; nothing was '
                            'trained.')
  assert ('point privacy.target_epsilon=0.001: config.privacy.target_epsilon=0.001: '
          'no noise multiplier') in message
  assert 'point training.eval_batch_size=0: config.training.eval_batch_size=0' in message
  assert not trainer.calls and not os.path.exists(workdir)
  # print_only checks too: a command line for a bad point would only fail later.
  with pytest.raises(sweeps.SweepError):
    sweep_runner.run_sweep(config, sweep_file, workdir, trainer, print_only=True)


def test_points_already_complete_are_not_checked_again(tmp_path):
  sweep_file = _write(tmp_path / 's.py', EPSILON_SWEEP)
  workdir = str(tmp_path / 'w')
  sweep_runner.run_sweep(base.get_config(), sweep_file, workdir, FakeTrainer(),
                   check_fn=None)
  checked = []
  sweep_runner.run_sweep(base.get_config(), sweep_file, workdir, FakeTrainer(),
                   check_fn=lambda c: checked.append(c.privacy.target_epsilon))
  assert not checked


def test_report_expands_a_sweep_folder_to_its_points(tmp_path):
  sweep_file = _write(tmp_path / 'eps.py', """
      def get_sweep():
        return [{"privacy.target_epsilon": e} for e in (1.0, 4.0)]
      """)
  workdir = str(tmp_path / 'eps_sweep')

  def train(config, point_dir):
    fake_runs.write_run(point_dir, epsilon=config.privacy.target_epsilon)

  sweep_runner.run_sweep(base.get_config(), sweep_file, workdir, train, check_fn=None)
  result = report.make_report([workdir], str(tmp_path / 'out'))
  assert [r['run'] for r in result['runs']] == [
      'eps_sweep/privacy.target_epsilon=1.0',
      'eps_sweep/privacy.target_epsilon=4.0']
  assert os.path.exists(os.path.join(
      tmp_path, 'out', 'eps_sweep__privacy.target_epsilon=1.0_curves.png'))

  # Without sweep.csv, sub-folders with run files still make it a sweep.
  os.remove(os.path.join(workdir, run_files.SWEEP_CSV))
  result = report.make_report([workdir], str(tmp_path / 'out2'))
  assert len(result['runs']) == 2


def test_a_stopped_point_stops_the_sweep(tmp_path):
  sweep_file = tmp_path / 'sweep.py'
  sweep_file.write_text('def get_sweep():\n  return [{"seed": 1}, {"seed": 2}]\n')
  trained = []

  def train_fn(config, workdir):
    trained.append(config.seed)
    raise run_control.RunControl().stopped(3, 10, workdir)

  with pytest.raises(run_control.Stopped):
    sweep_runner.run_sweep(base.get_config(), str(sweep_file), str(tmp_path / 'sw'),
                     train_fn, check_fn=None)
  assert trained == [1]  # the second point never started
