"""What every command shares: --config and --workdir, flag parsing, and the way out.

launch.py and the tools run with ``python -m`` (tools/benchmark.py,
tools/input_benchmark.py) parse their flags with ``parse_flags``: a bad flag, config
file or ``--config.a.b=v`` override is one ``error:`` line and exit status 2 instead of
a traceback or the help text. ``run(command)`` is the one place that turns what a
command raises into an exit: a user's error (``errors.UserError``, absl's UsageError)
is one ``error:`` line and 2; a signal acted on at a safe point
(``run_control.Stopped``) its message and 128 + the signal; a signal outside training
stops at once (image_classification/stop_signals.py).

Each mode's own flags live with its package, in a ``command_line.py`` that imports
nothing of JAX at its top (trained/, reporting/, sweeps/, tools/, training/), so that
``--help`` is instant and ``--host_devices`` sets XLA_FLAGS before jax loads; what a
handler needs is imported when it runs.
"""
import os
import sys

from absl import app
from absl import flags
from ml_collections import config_flags

from configs import base as base_config
from image_classification import config_file
from image_classification import errors
from image_classification import stop_signals

# A workdir's own config as a config file (--evaluate/--predict without --config).
SAVED_CONFIG = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'workdir',
                            'saved_config.py')

CONFIG = config_flags.DEFINE_config_file(
    'config', None, 'Experiment config file, FILE.py or FILE.py:ARG; it may set only '
    'the fields of configs/base.py (docs/configs.md).', lock_config=True)
# Our loader: one error line for a missing, broken or misspelt config file.
flags.FLAGS['config'].parser = config_file.FlagParser(
    base_config.get_config, base_config.OPEN_GROUPS, unchecked=[SAVED_CONFIG])
WORKDIR = flags.DEFINE_string('workdir', None, 'Output folder of the run.')


def fail(message: str) -> None:
  """One `error:` line and exit code 2."""
  print(f'error: {message}', file=sys.stderr, flush=True)
  sys.exit(2)


def override_error(argv, error: Exception) -> str:
  """The message for a --config.a.b=v override that the config file does not hold."""
  config = flags.FLAGS['config'].parser.loaded
  spec = next((a.split('=', 1)[1] for a in argv if a.startswith('--config=')), None)
  if spec is None:  # --evaluate/--predict=WORKDIR: that run's own config
    workdir = next((a.split('=', 1)[1] for a in argv
                    if a.startswith(('--evaluate=', '--predict='))), None)
    spec = f'the config.json of {workdir}' if workdir else 'the config'
  fields = [a[len('--config.'):].split('=', 1)[0] for a in argv
            if a.startswith('--config.')]
  field = next((f for f in fields if config is not None
                and config_file.missing_field(config, f)), None)
  if field is None:
    return (f'loading --config={spec} with its overrides failed: '
            f'{type(error).__name__}: {error}')
  text = config_file.override_error(config, spec, field, base_config.OPEN_GROUPS)
  if config_file.missing_field(config, field)[0] == 'model.kwargs':
    text += "; model.kwargs are the keyword arguments of the model's constructor"
    try:
      from image_classification.models import registry  # pylint: disable=g-import-not-at-top
      text += (f', and model {config.model.name!r} accepts '
               f'{registry.keyword_arguments(config.model.name)}')
    except Exception:  # pylint: disable=broad-except
      pass
  return text


def parse_flags(argv):
  """absl's flag parsing; a bad flag, config file or override is one `error:` line
  and exit code 2 instead of a traceback or the help text."""
  try:
    parsed = flags.FLAGS(argv)
  except config_file.ConfigFileError as e:
    fail(f'--config={e.spec}: {e.reason}')
  except flags.Error as e:  # e.g. --config.training.batch_size=abc, --host_devices=0
    fail(f'{e}. Pass --helpfull to see the flags.')
  except (AttributeError, KeyError) as e:
    fail(override_error(argv, e))
  stop_if_signalled()
  return parsed


def stop_if_signalled() -> None:
  """A safe point before the command's work: exit 128 + signal, nothing to save."""
  signum = stop_signals.received()
  if signum is not None:
    print(f'stopped by {stop_signals.name(signum)} before the command started: nothing '
          'was done, nothing to save. To start, run the same command again:\n  '
          f'{stop_signals.command_line()}', file=sys.stderr, flush=True)
    sys.exit(128 + signum)


def which_process() -> str:
  """'process I of N: ' in a multi-process job (each process prints its errors)."""
  jax = sys.modules.get('jax')
  if jax is None:
    return ''
  count = jax.process_count()
  return f'process {jax.process_index()} of {count}: ' if count > 1 else ''


def run(command) -> None:
  """Runs ``command()`` and exits as its outcome says (see the module docstring).

  Call it after the imports the command needs: a signal until here is acted on as
  'nothing was done'; from here a signal outside training stops at once (training
  defers it to its next safe point: a checkpoint, or nothing to save).
  """
  from image_classification.workdir import run_control  # pylint: disable=g-import-not-at-top
  stop_if_signalled()
  stop_signals.set_immediate()
  try:
    command()
  except (errors.UserError, app.UsageError) as e:
    print(f'error: {which_process()}{e}', file=sys.stderr)
    sys.exit(2)
  except run_control.Stopped as e:  # a signal, acted on at a safe point
    print(e.message, file=sys.stderr, flush=True)
    sys.exit(e.exit_code)
  except KeyboardInterrupt as e:  # a signal outside training, or a second Ctrl-C
    signum = getattr(e, 'signum', 2)
    print(f'\ninterrupted by {stop_signals.name(signum)}: stopped at once (a training '
          'run keeps its last checkpoint, from which the same command resumes):\n  '
          f'{run_control.resume_command()}', file=sys.stderr, flush=True)
    # At once: computations still in flight in XLA's threads can crash the
    # interpreter's shutdown (a segmentation fault instead of 128 + signal).
    sys.stdout.flush()
    os._exit(128 + signum)  # pylint: disable=protected-access
  signum = stop_signals.received()
  if signum is not None:  # came after the last safe point: the work is done
    print(f'received {stop_signals.name(signum)} as the command ended: its work is '
          'complete and saved; exit status 128 + the signal says it was signalled',
          file=sys.stderr, flush=True)
    sys.exit(128 + signum)
