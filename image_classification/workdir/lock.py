"""One training process per workdir.

Two commands training into the same --workdir at once (a command typed twice, a sweep
point started by hand beside its sweep) would interleave their metrics rows, overwrite
each other's checkpoints and run files, and each would take the other's rows for an
earlier attempt's. ``held(workdir)`` takes an exclusive, non-blocking ``flock`` on the
workdir folder itself (process 0 of a job: the others share its workdir by design, and
learn through ``agree`` that it is busy, so that every process stops). A second
command fails with ``WorkdirBusy`` before it loads anything or writes anything; the
lock goes with the process (a killed run leaves none behind). A process that holds a
workdir's lock may enter ``held`` again for it (a sweep point's job record, then its
training). File systems without ``flock`` (some network mounts) run unlocked.

Privacy: nothing here touches the mechanism; the lock holds no content.
"""
import contextlib
import errno
import fcntl
import os
from typing import Callable

import numpy as np

from image_classification import errors

_UNSUPPORTED = (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EINVAL)
_HELD: dict[str, int] = {}  # real path -> how many ``held`` blocks of this process


class WorkdirBusy(errors.UserError):
  """Another process is training in the workdir; the message says what to do."""


def _busy(workdir: str) -> WorkdirBusy:
  return WorkdirBusy(
      f'--workdir={workdir} is in use: another process is training in it (it holds the '
      "folder's lock). Wait for it to finish or stop it (Ctrl-C, or kill: it saves a "
      'checkpoint), then run this command again to resume; or use another --workdir')


def _try_lock(workdir: str) -> tuple[int | None, bool]:
  """(fd holding the lock or None, busy)."""
  fd = os.open(workdir, os.O_RDONLY)
  try:
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    return fd, False
  except OSError as e:
    os.close(fd)
    if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
      return None, True
    if e.errno in _UNSUPPORTED:
      return None, False
    raise


@contextlib.contextmanager
def held(workdir: str, writer: bool = True, create: bool = True,
         agree: Callable[[np.ndarray], np.ndarray] | None = None):
  """Holds the workdir's lock while the block runs; raises WorkdirBusy on every
  process when another process holds it. Yields whether this process holds it.

  ``writer``: whether this process takes the lock (process 0). ``create``: make the
  folder if missing; with False a workdir that does not exist yet is neither made nor
  locked (nothing can run in it). ``agree``: a collective that gives every process
  process 0's value (distributed.broadcast_from_writer; every process of a job must
  call ``held`` alike); None in a single process.
  """
  key = os.path.realpath(workdir)
  fd, busy, mine = None, False, False
  if writer and _HELD.get(key):
    mine = True  # this process already holds it
  elif writer and (create or os.path.isdir(workdir)):
    os.makedirs(workdir, exist_ok=True)
    fd, busy = _try_lock(workdir)
    mine = fd is not None
  if agree is not None:
    busy = bool(np.asarray(agree(np.asarray(busy, np.int32))))
  if busy:
    if fd is not None:
      os.close(fd)
    raise _busy(workdir)
  if mine:
    _HELD[key] = _HELD.get(key, 0) + 1
  try:
    yield mine
  finally:
    if mine:
      _HELD[key] -= 1
      if not _HELD[key]:
        del _HELD[key]
    if fd is not None:
      os.close(fd)  # releases the lock
