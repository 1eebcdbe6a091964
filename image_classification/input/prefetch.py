"""Loading the next batches in the background while the device computes.

``Prefetcher(make, steps, depth)`` calls ``make(step)`` for each step in order on one
background thread, at most ``depth`` steps ahead of the consumer, which takes them
with ``get(step)`` in the same order. ``make`` is the whole host side of a batch: the
sampler's indices, reading and decoding this process's rows, and the transfer to the
devices, so that the device never waits for the host when the host keeps up.

The batches are exactly those of the synchronous loop: ``make`` is a pure function of
the step (the sampler's draw depends only on the run's secret seed and the step; a
source's random reads only on (seed, step, record)), and the steps are produced and
consumed in order. ``depth=0`` is the synchronous loop itself (no thread).

Shutdown: ``close()`` (also on leaving a ``with`` block, whatever the exit: the end of
the run, an exception, Ctrl-C) tells the thread to stop, drains what it queued and
joins it. An exception raised by ``make`` is re-raised by the ``get`` of its step.

Privacy: nothing here changes what is computed. The thread holds a few batches of
private examples in memory, as the synchronous loop holds one.
"""
import queue
import threading
from typing import Any, Callable, Iterable

_POLL_S = 0.1


class _Failed:
  def __init__(self, error: BaseException):
    self.error = error


class Prefetcher:
  """Produces ``make(step)`` for ``steps`` in order, up to ``depth`` ahead."""

  def __init__(self, make: Callable[[int], Any], steps: Iterable[int], depth: int = 2):
    if depth < 0:
      raise ValueError(f'prefetch depth {depth}: must be >= 0 (0: synchronous)')
    self._make = make
    self._depth = depth
    self._stop = threading.Event()
    self._thread = None
    if depth:
      self._queue = queue.Queue(maxsize=depth)
      self._thread = threading.Thread(target=self._produce, args=(list(steps),),
                                      name='batch-prefetch', daemon=True)
      self._thread.start()

  def _put(self, item) -> bool:
    while not self._stop.is_set():
      try:
        self._queue.put(item, timeout=_POLL_S)
        return True
      except queue.Full:
        continue
    return False

  def _produce(self, steps) -> None:
    for step in steps:
      if self._stop.is_set():
        return
      try:
        item = (step, self._make(step))
      except BaseException as e:  # pylint: disable=broad-except  # handed to get()
        self._put((step, _Failed(e)))
        return
      if not self._put(item):
        return

  def get(self, step: int):
    """The batch of ``step``: the next one in order."""
    if self._thread is None:
      return self._make(step)
    while True:
      try:
        produced, item = self._queue.get(timeout=_POLL_S)
        break
      except queue.Empty:
        if not self._thread.is_alive() and self._queue.empty():
          raise RuntimeError(f'the batch prefetch thread ended before step {step}')
    if isinstance(item, _Failed):
      raise item.error
    if produced != step:
      raise RuntimeError(f'prefetch out of order: asked for step {step}, the next '
                         f'batch is step {produced}')
    return item

  @property
  def alive(self) -> bool:
    return self._thread is not None and self._thread.is_alive()

  def close(self, timeout: float = 30.0) -> None:
    """Stops the thread and drops what it queued (idempotent)."""
    self._stop.set()
    if self._thread is None:
      return
    while self._thread.is_alive():
      try:  # unblock a put waiting for room
        while True:
          self._queue.get_nowait()
      except queue.Empty:
        pass
      self._thread.join(_POLL_S)
      timeout -= _POLL_S
      if timeout <= 0:
        break
    try:
      while True:
        self._queue.get_nowait()
    except queue.Empty:
      pass

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    self.close()
    return False
