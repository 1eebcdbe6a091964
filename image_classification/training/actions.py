"""What the loop does between steps besides training: periodic actions.

Each action has ``due(step)`` (in the manner of big_vision's ``itstime``: every N
steps, 0 for never) and is called with the run and the step's metrics row. The loop
(training/loop.py ``fit``) asks every action after each step, in list order:

  Evaluate    every training.eval_every_steps: test (and validation) accuracy into
              the row; with select_on_validation, the parameters compete
  Log         every training.log_every_steps, and whenever an evaluation or a stop
              makes a row: metrics.jsonl, wandb, the console
  Checkpoint  every training.checkpoint_every_steps, every checkpoint_every_minutes of
              wall time, and on a stop signal (after the row: a resume keeps it)

The final step is not theirs: ``fit`` saves its checkpoint first, and ``finish``
exports, evaluates and writes the records. A new periodic action is a class here with
``due``, ``on_stop``, ``needs_row`` and ``__call__``, added to ``periodic_actions``.

Several processes: every process evaluates ``due`` in the same order with the same
arguments (the minutes and the signal are agreed among processes in
workdir/run_control.py), so all of them take part in every collective.
"""
import time

import jax

from image_classification.privacy import privatizers
from image_classification.training import evaluation
from image_classification.workdir import records
from image_classification.workdir import resume


def every(n: int, step: int) -> bool:
  """Whether ``step`` is a multiple of ``n`` (n = 0 or None: never)."""
  return bool(n) and step % n == 0


class Evaluate:
  """Test accuracy (and validation accuracy) into the row."""
  on_stop, needs_row = False, True

  def __init__(self, every_steps: int):
    self.every_steps = every_steps

  def due(self, step: int) -> bool:
    return every(self.every_steps, step)

  def __call__(self, run, row: dict) -> None:
    row.update(accuracies(run))
    if run.on_validation is not None:
      run.on_validation.offer(run.step, run.eval_params(), row)


class Log:
  """The row to metrics.jsonl, wandb and the console."""
  on_stop, needs_row = True, True

  def __init__(self, every_steps: int, evaluate: Evaluate):
    self.every_steps, self.evaluate = every_steps, evaluate

  def due(self, step: int) -> bool:
    return every(self.every_steps, step) or self.evaluate.due(step)

  def __call__(self, run, row: dict) -> None:
    run.metrics.write(row)
    run.tracker.log_metrics(row, run.step)
    run.progress.log(run.step, row['epsilon'], row['train_loss'], row['images_per_sec'],
                     test_accuracy=row.get('test_accuracy'),
                     validation_accuracy=row.get('validation_accuracy'))
    run.clock.update(run.step, force=False)


class Checkpoint:
  """A checkpoint of the state without its secret part, and privacy.json."""
  on_stop, needs_row = True, False

  def __init__(self, every_steps: int, control):
    self.every_steps, self.control = every_steps, control

  def due(self, step: int) -> bool:
    # Steps first: the minutes are agreed among processes only when asked.
    return every(self.every_steps, step) or self.control.checkpoint_due()

  def __call__(self, run, row: dict | None) -> None:
    del row
    save_checkpoint(run)


def periodic_actions(run) -> list:
  """The actions of a run, in the order they act on a step."""
  t = run.config.training
  evaluate = Evaluate(t.eval_every_steps)
  return [evaluate, Log(max(1, t.log_every_steps or run.plan.steps), evaluate),
          Checkpoint(t.checkpoint_every_steps, run.control)]


def save_checkpoint(run) -> None:
  """Saves step ``run.step``: the state without its secret noise state, privacy.json
  as of that step; prunes the selection's kept parameters; updates the wall clock."""
  step = run.step
  run.checkpoints.save(privatizers.publishable(run.state),
                       resume.make_metadata(run.config.seed, step, run.epsilon_at(step),
                                            run.plan))
  records.write_privacy_progress(
      run.workdir, run.exp.privacy_json(step, run.epsilon_at(step)), run.writer)
  run.control.checkpoint_saved()
  if run.on_validation is not None:
    run.on_validation.prune(run.checkpoints.steps())
  run.clock.update(step)


def accuracies(run) -> dict:
  """test_accuracy, and validation_accuracy when a validation split is held out
  (computed from private training data without noise)."""
  params, exp = run.eval_params(), run.exp
  batch_size = run.config.training.eval_batch_size
  out = {'test_accuracy': evaluation.evaluate(run.eval_fn, params, exp.data.test,
                                              batch_size, exp.mesh)}
  if exp.validation is not None:
    out['validation_accuracy'] = evaluation.evaluate(run.eval_fn, params,
                                                     exp.validation, batch_size,
                                                     exp.mesh)
  return out


class Meter:
  """The training statistics since the last row, and the throughput clock.

  The first step of a start or resume compiles: the clock starts at its end, and the
  time from launch to then is the run's ``startup_sec``.
  """

  def __init__(self, start_time: float, augmult: int):
    self.start_time, self.augmult = start_time, augmult
    self.pending, self.images_seen, self.timer = [], 0, None
    self.startup_sec = None

  def record(self, run, stats: dict, num_real: int) -> None:
    self.pending.append(stats)
    if self.timer is None:
      jax.block_until_ready(run.state.step)
      self.timer, self.images_seen = time.time(), 0
      self.startup_sec = self.timer - self.start_time
      run.progress.start(run.step)
    else:
      self.images_seen += num_real * self.augmult
    run.progress.step(run.step, run.epsilon_at, self.pending)

  def take_row(self, run) -> dict:
    """metrics.jsonl's row of ``run.step`` from the steps since the last row."""
    step, plan = run.step, run.plan
    summed = jax.tree_util.tree_map(lambda *x: sum(x), *jax.device_get(self.pending))
    elapsed = time.time() - self.timer
    n = float(summed['num_examples'])
    row = {'step': step, 'epoch': epoch(step, plan), 'epsilon': run.epsilon_at(step),
           'images_per_sec': self.images_seen / max(elapsed, 1e-9),
           'learning_rate': float(run.schedule(step - 1)),
           'realized_batch_size': n / len(self.pending),
           'train_loss': float(summed['loss_sum']) / max(n, 1.0),
           'clip_fraction': float(summed['num_clipped']) / max(n, 1.0),
           'nonfinite_gradients': int(summed['num_nonfinite'])}
    self.pending, self.timer, self.images_seen = [], time.time(), 0
    return row


def epoch(step: int, plan) -> float:
  """Passes over the training data after ``step`` steps, in expectation: step x B / N
  (metrics.jsonl's ``epoch``)."""
  return round(step * plan.expected_batch_size / plan.dataset_size, 4)
