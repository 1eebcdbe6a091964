"""SIGINT (Ctrl-C) and SIGTERM from a command's first line to its exit: never lost,
never a traceback.

launch.py calls ``install()`` before it imports anything else. From then on the first
SIGINT or SIGTERM is recorded (``received()``), and what happens next depends on the
mode the process is in:

* deferred (from ``install()`` until the command starts its work, and inside every
  ``deferred()`` block: the whole of a training run): the signal is only recorded and
  a notice printed; the code acts on it at its next safe point (after the config file
  is loaded, after the imports, before and after the steps, between the steps), where
  it saves a checkpoint or has nothing to save, and exits with 128 + the signal's
  number (130 for SIGINT, 143 for SIGTERM).
* immediate (the commands that have nothing to save: --evaluate, --predict, --report,
  the benchmarks, a sweep's checks): the signal also raises ``Interrupted`` at once.

A second SIGINT always stops at once: "stop now", losing what the next safe point
would have saved. It raises ``Interrupted``, except while the command is starting (the
imports and the config file, before ``set_immediate()``), where nothing is open and
the process exits with 130 at once. A second SIGTERM changes nothing.

Why not Python's default (a KeyboardInterrupt wherever the main thread is): raised
inside an import it can be swallowed by a library's bare ``except:`` (a Ctrl-C in the
first second of launch.py was lost that way and the run trained to its end) or leave
a C extension half initialised (a segmentation fault at 0.3 s); raised inside a write
it can leave half a file.

Outside launch.py (tests, a notebook) nothing is installed until a ``deferred()`` block
starts; the block installs the handler for its duration and restores the previous one
afterwards.

Privacy: nothing here touches the mechanism.
"""
import contextlib
import functools
import os
import shlex
import signal
import sys
import threading

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Interrupted(KeyboardInterrupt):
  """Raised by the handler: a second Ctrl-C, or a signal in immediate mode. A
  KeyboardInterrupt, so that code that cleans up on Ctrl-C does so for SIGTERM too."""

  def __init__(self, signum: int):
    super().__init__(signal.Signals(signum).name)
    self.signum = signum

  @property
  def exit_code(self) -> int:
    return 128 + self.signum


class _State:
  signum = None         # the first signal not yet acted on
  deferred = True       # the mode (see the module docstring)
  installed = False     # our handler is the process's handler
  starting = False      # install() was called and set_immediate() not yet


def name(signum: int) -> str:
  return signal.Signals(signum).name


def command_line() -> str:
  """This process's command line, to paste again: it resumes a stopped run."""
  argv = list(sys.argv)
  if argv and argv[0].endswith('.py'):
    argv.insert(0, 'python')
  return ' '.join(shlex.quote(a) for a in argv)


def _notice(signum: int) -> None:
  try:
    print(f'\nreceived {name(signum)}: stopping at the next safe point (with a '
          'checkpoint when training; Ctrl-C again stops at once)', file=sys.stderr,
          flush=True)
  except (OSError, RuntimeError, ValueError):  # a closed or busy stream: the record holds
    pass


def _notice_exit(signum: int) -> None:
  try:
    print(f'\n{name(signum)} again before the command started: exiting, nothing to '
          'save', file=sys.stderr, flush=True)
  except (OSError, RuntimeError, ValueError):
    pass


def _handle(signum, frame) -> None:
  del frame
  first = _State.signum is None
  if first:
    _State.signum = signum
  if not first and signum == signal.SIGINT:
    if _State.starting:  # nothing has started: nothing to close or to save
      _notice_exit(signum)
      os._exit(128 + signum)  # pylint: disable=protected-access
    raise Interrupted(signum)
  if first and not _State.deferred:
    raise Interrupted(signum)
  if first:
    _notice(signum)


def install() -> None:
  """Makes the handler the process's handler for SIGINT and SIGTERM, for good (the
  main thread only; elsewhere nothing changes). Starts in deferred mode."""
  if threading.current_thread() is not threading.main_thread():
    return
  for signum in SIGNALS:
    signal.signal(signum, _handle)
  _State.installed = True
  _State.deferred = True
  _State.starting = True


def received() -> int | None:
  """The first signal not yet acted on (SIGINT or SIGTERM), or None."""
  return _State.signum


def consume() -> int | None:
  """``received()``, which is then cleared: the caller acts on it."""
  signum, _State.signum = _State.signum, None
  return signum


def set_immediate() -> None:
  """From now on a first signal raises Interrupted at once (outside deferred blocks).
  A signal recorded earlier and not yet acted on is raised now."""
  _State.deferred = False
  _State.starting = False
  if _State.signum is not None:
    raise Interrupted(consume())


@contextlib.contextmanager
def deferred():
  """Signals inside the block are recorded, not raised (a second SIGINT still is).

  Installs the handler for the block when the process has none of ours (then restores
  the previous handlers, and a signal recorded but not acted on is raised as
  Interrupted on the way out, unless an exception is already leaving the block).
  Under launch.py's handler a signal left over stays recorded: launch.py acts on it
  when the command ends. Blocks nest.
  """
  own = (not _State.installed
         and threading.current_thread() is threading.main_thread())
  previous = {s: signal.signal(s, _handle) for s in SIGNALS} if own else {}
  was_deferred = _State.deferred
  _State.installed = _State.installed or own
  _State.deferred = True
  failed = False
  try:
    yield
  except BaseException:
    failed = True
    raise
  finally:
    _State.deferred = was_deferred
    if own:
      for signum, handler in previous.items():
        signal.signal(signum, handler)
      _State.installed = False
      left = consume()
      if left is not None and not failed:
        raise Interrupted(left)  # pylint: disable=lost-exception


def deferring(fn):
  """Decorator: ``fn`` runs inside a ``deferred()`` block (training/loop.py's train)."""
  @functools.wraps(fn)
  def wrapper(*args, **kwargs):
    with deferred():
      return fn(*args, **kwargs)
  return wrapper
