"""launch.py refuses a bad config file, a missing flag or a bad flag value as a user
meets them: one `error:` line naming the file or flag and the fix, exit code 2, no
traceback, no help text, nothing written (issue 28). Most are refused while the flags
are parsed, before JAX is imported: each case takes about a second."""
import os
import subprocess
import sys

import pytest

from configs import base
from image_classification import config_file

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# A user's own config files, each wrong in one way.
FILES = {
    'typo.py': ('from configs import quickstart\n'
                'def get_config():\n'
                '  c = quickstart.get_config()\n'
                '  c.training.batch_sise = 3\n'
                '  return c\n'),
    'syntax.py': 'def get_config(:\n  pass\n',
    'wrong_type.py': ('from configs import quickstart\n'
                      'def get_config():\n'
                      '  c = quickstart.get_config()\n'
                      "  c.training.batch_size = 'big'\n"
                      '  return c\n'),
    'no_get_config.py': 'x = 1\n',
    'from_scratch.py': ('import ml_collections\n'
                        'def get_config():\n'
                        '  return ml_collections.ConfigDict({"seed": 1})\n'),
    'kwargs.py': ('from configs import quickstart\n'
                  'def get_config():\n'
                  '  c = quickstart.get_config()\n'
                  '  c.model.kwargs.hidden = 32  # model.kwargs is open on purpose\n'
                  '  return c\n'),
}


def _launch(args, cwd=ROOT):
  env = dict(os.environ, JAX_PLATFORMS='cpu', WANDB_MODE='disabled')
  return subprocess.run([sys.executable, os.path.join(ROOT, 'launch.py')] + args,
                        cwd=cwd, env=env, capture_output=True, text=True, timeout=300,
                        check=False)


def _error_line(proc) -> str:
  assert proc.returncode == 2, proc.stdout[-2000:] + proc.stderr[-3000:]
  assert 'Traceback' not in proc.stderr and not proc.stdout.strip(), proc.stderr
  lines = [line for line in proc.stderr.splitlines() if line.strip()]
  assert len(lines) == 1 and lines[0].startswith('error: '), proc.stderr[-3000:]
  return lines[0]


@pytest.fixture(scope='module')
def files(tmp_path_factory):
  folder = tmp_path_factory.mktemp('configs')
  for name, text in FILES.items():
    (folder / name).write_text(text)
  return folder


# (the --config value, with {dir} for the folder of FILES; what the error line says)
CASES = {
    'misspelt_field': ('{dir}/typo.py', [
        'the file sets config.training.batch_sise, which configs/base.py does not '
        'define',
        '(did you mean config.training.batch_size?)', 'fix the name']),
    'syntax_error': ('{dir}/syntax.py', ['line 1: invalid syntax', 'not valid Python']),
    'wrong_type': ('{dir}/wrong_type.py', ['line 4: get_config() failed: TypeError',
                                           "'batch_size'"]),
    'no_get_config': ('{dir}/no_get_config.py', ['defines no get_config()']),
    'not_from_base': ('{dir}/from_scratch.py', [
        'the file lacks config.audit and 6 more field(s) of configs/base.py',
        'base.get_config()']),
    'missing_file': ('configs/quickstar.py', ['no such file',
                                              'did you mean configs/quickstart.py?']),
    'a_folder': ('configs', ['configs is a folder',
                             'give a config file in it, e.g. configs/quickstart.py']),
    'not_python': ('README.md', ['not a Python file']),
    'depth_alone': ('configs/cifar10_wrn_16_4.py:depth=40', [
        'choose eps= one of 1, 2, 4, 8', 'its arguments: eps, depth (default 16)']),
    'family_without_argument': ('configs/cifar10_wrn_16_4.py', [
        'choose eps= one of 1, 2, 4, 8']),
    'unknown_argument': ('configs/cifar10_wrn_16_4.py:epsilon=1', [
        "'epsilon' is not one of ['depth', 'eps']"]),
    'argument_to_a_plain_file': ('configs/quickstart.py:eps=8', [
        "configs/quickstart.py takes no argument after ':' (got ':eps=8')",
        '--config.privacy.target_epsilon=8']),
}


@pytest.mark.parametrize('case', sorted(CASES))
def test_a_bad_config_file_is_one_error_line(case, files, tmp_path):
  spec, expected = CASES[case]
  spec = spec.format(dir=files)
  workdir = tmp_path / 'run'
  line = _error_line(_launch([f'--config={spec}', f'--workdir={workdir}']))
  assert line.startswith(f'error: --config={spec}: '), line
  for text in expected:
    assert text in line, line
  assert not workdir.exists()


def test_a_config_file_may_set_model_kwargs(files):
  """model.kwargs is open: a keyword argument the base config lacks is accepted."""
  config = config_file.load(f'{files}/kwargs.py', base.get_config(), base.OPEN_GROUPS)
  assert config.model.kwargs.hidden == 32


@pytest.mark.parametrize('args,expected', [
    ([], 'error: --config and --workdir are required, e.g. python launch.py '
         '--config=configs/quickstart.py --workdir=/tmp/run1'),
    (['--config=configs/quickstart.py'], 'error: --workdir is required'),
    (['--workdir={tmp}/run'], 'error: --config is required'),
    (['--report={tmp}'], 'error: --workdir is required: the folder --report writes'),
    (['--config=configs/quickstart.py', '--workdir={tmp}/run', '--host_devices=0'],
     'error: flag --host_devices=0: 0 is not a positive integer'),
    (['--report={tmp}/empty,{tmp}/missing', '--workdir={tmp}/report'],
     'error: --report={tmp}/empty,{tmp}/missing: no run to report ({tmp}/empty holds '
     'no run files'),
], ids=['nothing', 'no_workdir', 'no_config', 'report_without_workdir',
        'host_devices_0', 'report_of_no_run'])
def test_a_missing_or_bad_flag_is_one_error_line_not_the_help(args, expected, tmp_path):
  (tmp_path / 'empty').mkdir()
  line = _error_line(_launch([a.format(tmp=tmp_path) for a in args]))
  assert line.startswith(expected.format(tmp=tmp_path)), line
  assert sorted(os.listdir(tmp_path)) == ['empty']  # nothing written


def test_every_config_in_configs_sets_only_base_fields():
  """What launch.py checks for a user's file holds for the project's own configs."""
  for path in sorted(os.listdir(os.path.join(ROOT, 'configs'))):
    if not path.endswith('.py') or path in ('__init__.py', 'base.py', 'common.py'):
      continue
    spec = f'configs/{path}' + (':eps=1' if path in (
        'cifar10_wrn_16_4.py', 'cifar_wrn_28_10_finetune.py',
        'imagenet_nfnet_f3_finetune.py') else '')
    cwd = os.getcwd()
    os.chdir(ROOT)
    try:
      config_file.load(spec, base.get_config(), base.OPEN_GROUPS)
    finally:
      os.chdir(cwd)


def test_the_field_check_names_the_first_wrong_field_and_the_fix():
  schema = base.get_config()
  config = base.get_config()
  config.unlock()
  config.training.batch_sise = 3
  config.model.kwargs.anything = 1  # open group
  with pytest.raises(ValueError, match=r'sets config.training.batch_sise, which s does '
                     r'not define \(did you mean config.training.batch_size\?\)'):
    config_file.check_fields(config, schema, base.OPEN_GROUPS, file='f', schema_name='s')
  del config.training['batch_sise']
  config_file.check_fields(config, schema, base.OPEN_GROUPS)
  with pytest.raises(ValueError, match='model.kwargs.anything'):
    config_file.check_fields(config, schema, (), file='f', schema_name='s')
  del config.data['prefetch']
  with pytest.raises(ValueError, match='lacks config.data.prefetch'):
    config_file.check_fields(config, schema, base.OPEN_GROUPS)


def test_a_misspelt_override_is_not_told_to_add_the_field(tmp_path):
  """Outside model.kwargs the fields are fixed: the message points to the spelling,
  not to adding a field the config-file check would refuse."""
  proc = _launch(['--config=configs/quickstart.py', '--config.training.batchsize=8',
                  f'--workdir={tmp_path / "run"}'])
  line = _error_line(proc)
  assert 'did you mean config.training.batch_size?' in line
  assert 'check the spelling' in line and 'add it to the config file' not in line
  proc = _launch(['--config=configs/quickstart.py', '--config.model.kwargs.widht=8',
                  f'--workdir={tmp_path / "run"}'])
  assert proc.returncode == 2


def test_a_bad_sweep_file_fails_before_jax_loads(tmp_path):
  """A missing sweep file, or a point naming no config field, is one error line from
  the flag checks (before JAX, the data or any point): no run file is written."""
  bad = tmp_path / 'bad_sweep.py'
  bad.write_text("def get_sweep():\n  return [{'training.batchsize': 8}]\n")
  cases = {str(tmp_path / 'missing.py'): 'does not exist',
           str(bad): 'training.batchsize'}
  for sweep, message in cases.items():
    workdir = tmp_path / 'sweep'
    line = _error_line(_launch(['--config=configs/quickstart.py', f'--sweep={sweep}',
                                f'--workdir={workdir}', '--host_devices=2']))
    assert message in line, line
    assert not workdir.exists()
