"""The background batch loader gives the synchronous loop's batches in the same order,
re-raises a loading error at its step, and stops its thread at the end of a run, on an
exception and on Ctrl-C (KeyboardInterrupt)."""
import threading
import time

import numpy as np
import pytest

from image_classification.input import prefetch
from image_classification.privacy import batch_selection


def _batch_maker(calls=None):
  """What the training loop's batch_of does on the host: the step's Poisson draw,
  padded into chunks, and the examples read."""
  sampler = batch_selection.PoissonSampling(500, 64, seed=1234)
  images = np.random.default_rng(0).integers(0, 255, (500, 4, 4, 1), np.uint8)

  def make(step):
    if calls is not None:
      calls.append(step)
    return [(images[idx], idx, mask) for idx, mask in
            batch_selection.pad_chunks(sampler.indices(step), 96)]

  return make


def _prefetch_threads():
  return [t for t in threading.enumerate() if t.name == 'batch-prefetch']


@pytest.mark.parametrize('depth', [1, 2, 4])
def test_same_batches_in_the_same_order_as_synchronous(depth):
  make = _batch_maker()
  with prefetch.Prefetcher(make, range(3, 40), depth=0) as sync:
    expected = [sync.get(step) for step in range(3, 40)]
  with prefetch.Prefetcher(make, range(3, 40), depth=depth) as ahead:
    got = [ahead.get(step) for step in range(3, 40)]
  assert len(got) == len(expected)
  for a, b in zip(got, expected):
    assert len(a) == len(b)
    for x, y in zip(a, b):
      for u, v in zip(x, y):
        np.testing.assert_array_equal(u, v)
  assert not ahead.alive


def test_runs_ahead_by_at_most_depth():
  calls = []
  with prefetch.Prefetcher(_batch_maker(calls), range(100), depth=2) as p:
    p.get(0)
    time.sleep(0.5)
    # step 0 was taken; at most 2 are queued and one more may be in the making.
    assert max(calls) <= 3
  assert not p.alive


def test_a_loading_error_is_raised_at_its_step_and_the_thread_ends():
  def make(step):
    if step == 5:
      raise OSError('unreadable image')
    return step

  with prefetch.Prefetcher(make, range(10), depth=2) as p:
    assert [p.get(s) for s in range(5)] == list(range(5))
    with pytest.raises(OSError, match='unreadable image'):
      p.get(5)
  assert not p.alive


@pytest.mark.parametrize('error', [RuntimeError, KeyboardInterrupt])
def test_an_exception_or_ctrl_c_in_the_loop_stops_the_thread(error):
  before = len(_prefetch_threads())
  p = None
  with pytest.raises(error):
    with prefetch.Prefetcher(_batch_maker(), range(10_000), depth=2) as p:
      p.get(0)
      time.sleep(0.2)  # the thread has filled its queue and waits for room
      raise error()
  assert p is not None and not p.alive
  assert len(_prefetch_threads()) == before


def test_the_end_of_a_run_stops_the_thread():
  with prefetch.Prefetcher(lambda s: s, range(5), depth=2) as p:
    assert [p.get(s) for s in range(5)] == list(range(5))
  assert not p.alive


def test_out_of_order_is_refused():
  with prefetch.Prefetcher(lambda s: s, range(5), depth=2) as p:
    with pytest.raises(RuntimeError, match='out of order'):
      p.get(1)
