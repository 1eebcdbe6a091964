"""Tests for make_report: tables, plots, sweeps, and broken run folders."""
import os

from image_classification.reporting import report
from tests.reporting import fake_runs


def _runs(tmp_path):
  private = fake_runs.write_run(str(tmp_path / 'wrn_eps8'), accuracy=0.81,
                                epsilon=8.0, model='wide_resnet',
                                dataset='cifar10')
  public = fake_runs.write_run(str(tmp_path / 'wrn_nonprivate'), accuracy=0.95,
                               non_private=True, model='wide_resnet',
                               dataset='cifar10')
  return private, public


def test_report_table_and_plots(tmp_path):
  private, public = _runs(tmp_path)
  out = str(tmp_path / 'report')
  result = report.make_report([private, public], out)

  assert result['problems'] == []
  assert [r['run'] for r in result['runs']] == ['wrn_eps8', 'wrn_nonprivate']
  md = open(result['report']).read()
  assert '| wrn_eps8 | wide_resnet | cifar10 | 81.00 | 8.00 | 1e-05 | 30 |' in md
  assert 'wrn_nonprivate (non-private)' in md
  assert 'inf (non-private)' in md
  assert 'rdp, poisson, add_or_remove_one' in md
  assert 'do not count' in md
  for name in ('accuracy_vs_epsilon.png', 'wrn_eps8_curves.png',
               'wrn_nonprivate_curves.png'):
    path = os.path.join(out, name)
    assert os.path.getsize(path) > 1000
    assert path in result['plots']
    assert name in md


def test_broken_runs_are_named_and_others_reported(tmp_path):
  private, _ = _runs(tmp_path)
  corrupt = fake_runs.write_run(str(tmp_path / 'corrupt'))
  with open(os.path.join(corrupt, 'summary.json'), 'w') as f:
    f.write('{"test_accuracy": 0.')
  with open(os.path.join(corrupt, 'metrics.jsonl'), 'a') as f:
    f.write('{"step": 40, "epsi')
  running = fake_runs.write_run(str(tmp_path / 'running'), complete=False)
  os.remove(os.path.join(running, 'privacy.json'))
  missing = str(tmp_path / 'does_not_exist')

  result = report.make_report([private, corrupt, running, missing],
                              str(tmp_path / 'out'))
  problems = '\n'.join(result['problems'])
  assert os.path.join(corrupt, 'summary.json') + ': cannot be read' in problems
  assert os.path.join(corrupt, 'metrics.jsonl') + ':4:' in problems
  assert os.path.join(running, 'summary.json') + ': missing' in problems
  assert os.path.join(running, 'privacy.json') + ': missing' in problems
  assert missing + ': no such run folder' in problems

  rows = {r['run']: r for r in result['runs']}
  assert set(rows) == {'wrn_eps8', 'corrupt', 'running'}
  assert rows['wrn_eps8']['test_accuracy'] == 0.81
  # Values fall back to privacy.json and the last metrics rows.
  assert rows['corrupt']['epsilon'] == 4.0
  assert rows['corrupt']['test_accuracy'] == 0.8
  assert rows['running']['status'] == 'no summary (running or crashed)'
  assert rows['running']['steps'] == 30
  md = open(result['report']).read()
  assert '## Problems' in md and 'corrupt/summary.json' in md


def test_duplicate_names(tmp_path):
  a = fake_runs.write_run(str(tmp_path / 'a' / 'run'))
  b = fake_runs.write_run(str(tmp_path / 'b' / 'run'))
  out = str(tmp_path / 'out')
  result = report.make_report([a, b], out)
  assert result['report'] == os.path.join(out, 'report.md')
  md = open(os.path.join(out, 'report.md')).read()
  assert '| run |' in md and '| run_2 |' in md
  assert os.path.exists(os.path.join(out, 'run_2_curves.png'))


def test_formatting():
  assert report.format_duration(12.34) == '12.3s'
  assert report.format_duration(125) == '2m 05s'
  assert report.format_duration(3 * 3600 + 120) == '3h 02m'
  assert report.format_epsilon(None, non_private=True) == 'inf (non-private)'
  assert report.format_epsilon(float('nan')) == ''
  assert report.format_accuracy(0.8123) == '81.23'
  assert report.markdown_table(['a'], [['x|y']]).splitlines()[2] == r'| x\|y |'


def test_private_test_accuracy_and_fine_tuning_totals_are_marked(tmp_path):
  """A test accuracy on an evaluation split carved out of the private data is marked
  as released without noise, and a composed fine-tuning run shows its total (the
  guarantee for that data) beside its own epsilon; a plain run shows neither. The
  same in the report and in a sweep's table."""
  import json  # pylint: disable=g-import-not-at-top
  from image_classification.sweeps import summary as sweep_summary  # pylint: disable=g-import-not-at-top
  plain = fake_runs.write_run(str(tmp_path / 'plain'), accuracy=0.8, epsilon=4.0)
  carved = fake_runs.write_run(str(tmp_path / 'carved'), accuracy=0.7, epsilon=4.0)
  tuned = fake_runs.write_run(str(tmp_path / 'tuned'), accuracy=0.9, epsilon=2.0)
  for run, extra in ((carved, {'test_on_private_data': True}),
                     (tuned, {'total_epsilon_with_pretrained': 6.0,
                              'total_delta_with_pretrained': 2e-5})):
    with open(os.path.join(run, 'summary.json')) as f:
      summary = json.load(f)
    summary.update(extra)
    with open(os.path.join(run, 'summary.json'), 'w') as f:
      json.dump(summary, f)
  md = open(report.make_report([plain, carved, tuned], str(tmp_path / 'r'))['report']).read()
  assert '| plain | cnn | digits | 80.00 | 4.00 | 1e-05 |' in md
  assert '| carved | cnn | digits | 70.00 (private data, no noise) | 4.00 | 1e-05 |' in md
  assert '| tuned | cnn | digits | 90.00 | 2.00 (total 6.00) | 1e-05 |' in md
  rows = [{'point': name, 'overrides': {}, 'status': 'complete', 'steps': 30,
           'wall_time_sec': 1.0, 'delta': 1e-5, **report.read_summary(run),
           'total_epsilon': report.read_summary(run).get('total_epsilon_with_pretrained')}
          for name, run in (('carved', carved), ('tuned', tuned))]
  table = sweep_summary._markdown(rows, [])  # pylint: disable=protected-access
  assert '| carved | 70.00 (private data, no noise) | 4.00 |' in table
  assert '| tuned | 90.00 | 2.00 (total 6.00) |' in table
