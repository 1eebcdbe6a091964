"""The training loop: ``train = start -> fit -> finish``.

  start(config, workdir)   the run's secret, model, optimiser, jitted DP step, and the
                           restore of the latest checkpoint -> a Run
  fit(run, actions)        DP-SGD steps until the plan's last; between steps the
                           periodic actions (training/actions.py): evaluate, log,
                           checkpoint by steps, minutes or signal
  finish(run)              export the parameters, the final evaluation, the audit's
                           finish, the records (workdir/records.py)

``train(config, workdir)`` is what runs.train calls. Running it again with the same
workdir resumes from the latest usable checkpoint (workdir/resume.py says why that is
exact and what it means for privacy); a finished run is reported, not retrained; a
workdir of another config is refused.

Long runs (workdir/run_control.py): Ctrl-C / SIGTERM finish the step, checkpoint and
raise run_control.Stopped. The final checkpoint and the export of the final parameters
come before the final evaluation and the run files, so nothing that fails after the
last step loses the training: the same command then only evaluates and writes them.
"""
import dataclasses
import json
import math
import os
import time
from typing import Any, Callable

import jax
import ml_collections

from image_classification import optimizers
from image_classification import stop_signals
from image_classification.data import fingerprint
from image_classification.input import input_pipeline
from image_classification.input import prefetch
from image_classification.models import features as features_lib
from image_classification.privacy import batch_selection
from image_classification.privacy import mechanism_secret
from image_classification.privacy import privatizers
from image_classification.reporting import progress as progress_lib
from image_classification.reporting import round_up
from image_classification.reporting import run_checks
from image_classification.reporting import wandb_logger
from image_classification.trained import export
from image_classification.trained import pretrained
from image_classification.training import actions as actions_lib
from image_classification.training import canary_slots
from image_classification.training import distributed
from image_classification.training import dp_step
from image_classification.training import evaluation
from image_classification.training import experiment as experiment_lib
from image_classification.training import mesh as mesh_lib
from image_classification.training import resources
from image_classification.workdir import selection as selection_lib
from image_classification.workdir import checkpoint_store
from image_classification.workdir import lock as workdir_lock
from image_classification.workdir import records
from image_classification.workdir import resume
from image_classification.workdir import run_control
from image_classification.workdir import run_files
from image_classification.workdir import secret_file


@dataclasses.dataclass
class Run:
  """A run in progress: what ``start`` builds, ``fit`` advances, ``finish`` closes."""
  config: ml_collections.ConfigDict
  workdir: str
  exp: experiment_lib.Experiment
  writer: bool                      # process 0: writes the run files and prints
  randomness: mechanism_secret.MechanismRandomness
  state: Any
  step_fn: dp_step.DPStep
  eval_fn: Callable
  schedule: Callable
  epsilon_at: Callable[[int], float]
  checkpoints: checkpoint_store.Checkpoints
  start_step: int
  restored: bool
  step: int = 0
  canaries: Any = None
  on_validation: selection_lib.Selection | None = None
  metrics: Any = None
  tracker: Any = None
  progress: Any = None
  control: Any = None
  clock: Any = None
  batches: Any = None
  meter: Any = None
  final_row: dict | None = None

  @property
  def plan(self):
    return self.exp.plan

  @property
  def use_ema(self) -> bool:
    return self.config.training.ema.decay > 0

  def eval_params(self):
    """The parameters evaluated and exported: the EMA's when it is on."""
    return self.state.eval_params(self.use_ema)


@resources.translate_errors  # out of memory or disk: one line naming the fix
@stop_signals.deferring  # a signal is acted on at the safe points (run_control.py)
def train(config: ml_collections.ConfigDict, workdir: str, dry_run: bool = False,
          dataset=None, audit=None) -> dict:
  """Runs one experiment; returns summary.json's content (plan.json's for dry runs).

  ``audit``: the run's audit plug-in (audit/hook.py, given by runs.train): its
  ``prepare(dataset)`` runs before the privacy plan, ``finish(...)`` after the final
  evaluation. A config with the audit on and no plug-in is refused.
  """
  start_time = time.time()
  # One training process per workdir (workdir/lock.py): an existing workdir is locked
  # before anything is loaded, a new one as it is made; a second command fails there.
  writer, agree = distributed.is_writer(), distributed.broadcast_from_writer
  with workdir_lock.held(workdir, writer, create=False, agree=agree) as locked:
    exp = prepare(config, workdir, dry_run, dataset, audit)
    if isinstance(exp, dict):  # a complete run, or a dry run: nothing to train
      return exp
    with workdir_lock.held(workdir, writer and not locked, agree=agree):
      run = start(exp, workdir, start_time)
      fit(run, actions_lib.periodic_actions(run))
      return finish(run)


# ------------------------------------------------------------------ prepare


def prepare(config, workdir: str, dry_run: bool, dataset, audit):
  """Checks and decides everything before any file is written: an Experiment, or
  the summary of a complete run, or (dry run) plan.json's content."""
  writer = distributed.is_writer()
  # Every process of a job must run the same config (the same batches, the same step).
  distributed.check_same(json.dumps(config.to_dict(), sort_keys=True, default=str),
                         'config')
  # Before loading anything; a dry run too, so that its plan.json never contradicts
  # the run files of another config already in the workdir.
  resume.check_config(workdir, config)
  done = None if dry_run else records.already_complete(workdir)
  if done is not None:
    return done
  exp = experiment_lib.Experiment(config, dry_run=dry_run, dataset=dataset, audit=audit)
  run_control.stop_if_requested(  # the data may have taken long to load
      'during the dry run' if dry_run else 'before training started',
      'nothing was trained or written in this attempt (the workdir is as it was)')
  if exp.clipping_note and writer:
    print(exp.clipping_note, flush=True)
  if not dry_run:  # several processes: the same data and plan everywhere, checked now
    # The records as read (before any feature extractor): the same bytes on every host.
    distributed.check_same_data(lambda: fingerprint.of(exp.images.train), exp.plan_json)
  # BandMF: the strategy, optimised for the plan's steps and b (cached in the workdir).
  exp.plan = exp.plan.with_strategy(workdir)
  # Memory per device (advisory: a warning when it exceeds what the device has).
  memory = resources.estimate(exp.model, exp.abstract_params, exp.image_shape, config,
                              exp.plan, exp.devices, exp.per_example_grads)
  if writer and resources.memory_warning(memory, config):
    print(f'warning: {resources.memory_warning(memory, config)}', flush=True)
  if dry_run:
    return records.write_dry_run(
        workdir, exp.plan_json(), memory, exp.plan,
        f'{config.model.name} ({exp.num_params:,} parameters) on {config.data.name} '
        f'(N={exp.dataset_size}, images {"x".join(map(str, exp.image_shape))}, '
        f'{exp.data.num_classes} classes)', writer)
  return exp


# ------------------------------------------------------------------ start


def start(exp: experiment_lib.Experiment, workdir: str, start_time: float) -> Run:
  """The run's secret, state and step, restored from the latest checkpoint if any."""
  config, plan = exp.config, exp.plan
  writer = distributed.is_writer()
  if writer:
    run_files.write_json(workdir, run_files.CONFIG, config.to_dict())
  checkpoints = checkpoint_store.Checkpoints(workdir)
  # The noise key and the batch-selection seed: secret, from the workdir's private file
  # (workdir/secret_file.py); with several processes process 0 reads or creates it
  # and sends it to the others. Without the file, an earlier attempt's metrics rows
  # (no checkpoint) refuse a new one.
  randomness = secret_file.for_run(
      workdir, config.seed, plan.insecure_seeded_noise, resuming=bool(checkpoints.steps()),
      released_rows=len(run_files.read_metrics(workdir)[0]) if writer else 0,
      writer=writer, broadcast=distributed.broadcast_from_writer
      if jax.process_count() > 1 else None)
  if randomness.insecure:
    print(f'WARNING: {mechanism_secret.INSECURE_WARNING}', flush=True)
  export.write_model_card(workdir, export.model_card(
      config, exp.images, tuple(exp.images.train.image_shape)))
  run = _build(exp, workdir, writer, randomness, checkpoints)
  _restore(run)
  _open_outputs(run, start_time)
  return run


def _build(exp, workdir, writer, randomness, checkpoints) -> Run:
  """Parameters, optimiser, privatizer and the jitted DP step (not compiled yet)."""
  config, plan, t = exp.config, exp.plan, exp.config.training
  base_key = jax.random.PRNGKey(config.seed)  # public: the initialisation only
  params = exp.init_variables(
      jax.random.fold_in(base_key, experiment_lib.INIT_STREAM))['params']
  if exp.pretrained_weights is not None:  # fine-tuning: the weights, a fresh head
    params = pretrained.merge_pretrained(exp.pretrained_weights, params,
                                         source=config.model.pretrained_path)
  optimizer, schedule = optimizers.make_optimizer(t, plan.steps)
  privatizer = plan.privatizer()
  state = dp_step.init_state(params, optimizer, config.model.train_only_head, privatizer)
  step_cfg = dp_step.step_config(
      config, clipping_norm=plan.clipping_norm,
      expected_batch_size=plan.expected_batch_size, mean=exp.data.mean,
      std=exp.data.std, per_example_grads=exp.per_example_grads)
  # The gradient audit's canaries (training/canary_slots.py); None without that audit.
  canaries = (exp.audit.step_canaries(state.params, plan) if exp.audit is not None
              else None)
  step_fn = dp_step.DPStep(exp.model.apply, optimizer, step_cfg, exp.mesh,
                           augment_key=randomness.augment_key(),
                           noise_key=randomness.noise_key(), privatizer=privatizer,
                           canaries=canaries)
  ledger = plan.ledger()
  return Run(
      config=config, workdir=workdir, exp=exp, writer=writer, randomness=randomness,
      state=jax.device_put(state, mesh_lib.replicated(exp.mesh)), step_fn=step_fn,
      eval_fn=evaluation.make_eval_fn(exp.model.apply, tuple(exp.data.mean),
                                      tuple(exp.data.std)),
      schedule=schedule, checkpoints=checkpoints, start_step=0, restored=False,
      canaries=canaries,
      epsilon_at=lambda step: math.inf if plan.non_private else ledger.epsilon(step))


def _restore(run: Run) -> None:
  """The latest usable checkpoint, if any; the secret noise state replayed."""
  restored = run.checkpoints.restore_latest(run.state)
  plan = run.plan
  if restored is not None:
    resume.check_resume(restored.metadata, run.config.seed, plan, run.epsilon_at)
    run.start_step, run.restored = restored.step, True
    # Checkpoints never hold the noise state (it is secret): rebuild it from the key.
    run.state = restored.state.replace(noise_state=jax.device_put(
        privatizers.replay(run.step_fn.privatizer, restored.state.params,
                           run.randomness.noise_key(), run.start_step),
        mesh_lib.replicated(run.exp.mesh)))
    print(f'resuming from the checkpoint of step {run.start_step} in '
          f'{run.checkpoints.directory} (epsilon spent so far '
          f'{round_up.round_up(run.epsilon_at(run.start_step), decimals=4)}; '
          'the ledger continues from there)', flush=True)
  elif os.path.exists(os.path.join(run.workdir, run_files.METRICS)):
    print(f'{run.workdir} holds an earlier attempt that stopped before its first '
          'checkpoint: starting from step 0', flush=True)
  run.step = int(run.state.step)
  run_control.stop_if_requested(
      f'before the first step of this attempt (step {run.start_step} of {plan.steps})',
      f'nothing new to save (the checkpoint of step {run.start_step} is kept)'
      if run.restored else 'nothing was trained yet, so nothing was saved',
      run.start_step, plan.steps)
  records.write_privacy_progress(
      run.workdir, run.exp.privacy_json(run.start_step, run.epsilon_at(run.start_step)),
      run.writer)


def _open_outputs(run: Run, start_time: float) -> None:
  """metrics.jsonl, wandb, the console, the signal handler, the batch reader."""
  config, plan, exp, t = run.config, run.plan, run.exp, run.config.training
  # training.select_on_validation: the best evaluation's parameters so far.
  if t.select_on_validation:
    run.on_validation = selection_lib.Selection(
        run.workdir, run.start_step if run.restored else None, run.writer)
  run.tracker = wandb_logger.WandbLogger(config, run.workdir,
                                         active=jax.process_index() == 0)
  run.tracker.log_privacy(exp.plan_json())
  # Images per example: augmult's random views, or the fixed views of the features.
  views = features_lib.num_views(config)
  per_example = config.data.augmult * views
  print(f'{config.model.name} ({exp.num_params:,} params) on {config.data.name} '
        f'(N={exp.dataset_size}, images {"x".join(map(str, exp.image_shape))}, '
        f'{exp.data.num_classes} classes) | {mesh_lib.describe(exp.devices)} | '
        f'{plan.steps} steps of expected batch {plan.expected_batch_size} x '
        + (f'{views} fixed views' if views > 1 else f'augmult {config.data.augmult}')
        + ' | '
        + ('NON-PRIVATE (no noise)' if plan.non_private else
           f'sigma={plan.noise_multiplier:.4f}, C={plan.clipping_norm}, target '
           f'eps={plan.target_epsilon} at delta={round_up.round_up(plan.delta, 3)} '
           f'({plan.accountant}, {plan.sampling})'), flush=True)
  # Rows after the restored step are dropped: those steps are redone.
  run.metrics = (run_files.MetricsWriter(
      run.workdir, truncate_after_step=run.start_step if run.restored else None)
                 if run.writer else _NoMetrics())
  run.progress = progress_lib.Progress(
      plan.steps, images_per_step=plan.expected_batch_size * per_example,
      epochs_per_step=plan.expected_batch_size / exp.dataset_size,
      test_on_private_data=bool(exp.data.private_evaluation_note))
  run.control = run_control.RunControl(t.checkpoint_every_minutes)
  run.clock = run_control.WallClock(run.workdir, run.start_step, start_time=start_time)
  run.meter = actions_lib.Meter(start_time, per_example)
  # The next batches are read in the background while the devices compute; the thread
  # is stopped however the loop ends (the last step, an exception, Ctrl-C).
  run.batches = prefetch.Prefetcher(_batch_reader(run), range(run.step, plan.steps),
                                    depth=config.data.prefetch)


def _batch_reader(run: Run):
  """step -> (the step's logical batch as global arrays, its number of real examples).
  Every process draws the same indices; each reads only the rows its devices hold."""
  selection = run.plan.batch_selection(run.randomness.sampling_seed)  # secret seed
  capacity = selection.capacity(
      len(run.exp.devices) * max(run.config.training.micro_batch_size, 1))
  sharding, train_split = mesh_lib.batch_sharding(run.exp.mesh), run.exp.data.train

  def batch_of(step):
    indices = selection.indices(step)
    load = lambda idx: train_split.get(idx, step=step)
    return [distributed.global_batch(sharding, idx, mask, load)
            for idx, mask in batch_selection.pad_chunks(indices, capacity)], len(indices)

  return batch_of


# ------------------------------------------------------------------ fit


def fit(run: Run, periodic: list) -> None:
  """DP-SGD steps until the plan's last (epsilon is monotone in steps: the plan is
  the budget guard), or until a signal stops the run at a checkpoint."""
  with run.control, run.progress, run.batches:
    while run.step < run.plan.steps:
      chunks, num_real = run.batches.get(run.step)
      run.state, stats = run.step_fn.run(run.state, chunks)
      if run.canaries is not None:  # this step's privatized gradient at the canaries
        run.exp.audit.observe(run.step, stats.pop(canary_slots.OBSERVATION))
      run.step += 1
      run.meter.record(run, stats, num_real)
      if run.step == run.plan.steps:
        # Before anything that could fail: the training is kept whatever follows.
        run.final_row = run.meter.take_row(run)  # evaluated in finish, after export
        actions_lib.save_checkpoint(run)
        break
      stop = run.control.stop_requested()
      due = [a for a in periodic if (stop and a.on_stop) or a.due(run.step)]
      row = run.meter.take_row(run) if any(a.needs_row for a in due) else None
      for action in due:
        action(run, row)
      if stop:
        run.metrics.close()
        run.checkpoints.close()
        run.tracker.close()
        raise run.control.stopped(run.step, run.plan.steps, run.checkpoints.directory)


# ------------------------------------------------------------------ finish


def finish(run: Run) -> dict:
  """Exports the parameters, evaluates them, writes privacy.json, privacy.md and
  summary.json; returns summary.json's content."""
  plan, exp, step = run.plan, run.exp, run.step
  input_pipeline.close(exp.data.train)  # its worker processes, if any
  run.checkpoints.close()
  eps = run.epsilon_at(step)
  if run.on_validation is None:  # else the selected parameters are exported below
    export.export_params(run.workdir, run.eval_params(), step=step, epsilon=eps,
                            delta=plan.delta, **exp.composed_total(eps))
  _stop_after_the_last_step(run, 'the final evaluation and the run files')
  final_accuracies, selected = _final_evaluation(run)
  audit_result = None
  if exp.audit is not None:
    audit_result = exp.audit.finish(exp.model.apply, run.eval_params(),
                                    tuple(exp.data.mean), tuple(exp.data.std), plan,
                                    run.workdir, inputs_of=exp.inputs_of)
  privacy = records.final_privacy(exp.privacy_json(step, eps), plan, step, selected)
  records.write_final_privacy(run.workdir, privacy, run.writer)
  run.clock.update(step)
  warnings = run_checks.run_warnings(
      [row.get('train_loss') for row in run_files.read_metrics(run.workdir)[0]]
      if run.writer else [], final_accuracies['test_accuracy'], exp.data.num_classes)
  _stop_after_the_last_step(run, 'summary.json')
  summary = records.summary(
      outcome={'test_accuracy': final_accuracies['test_accuracy'], 'epsilon': eps,
               'steps': step},
      plan=plan, insecure=run.randomness.insecure, clock=run.clock,
      start_step=run.start_step, startup_sec=run.meter.startup_sec,
      audit_result=audit_result, use_ema=run.use_ema, description=_description(run),
      final_accuracies=final_accuracies, selected=selected,
      total=exp.composed_total(eps), warnings=warnings)
  records.write_summary(run.workdir, summary, run.writer)
  if run.writer:
    secret_file.discard(run.workdir)  # complete: nothing will resume, nothing needs it
  if run.on_validation is not None:
    run.on_validation.discard()
  run.tracker.log_privacy(privacy)
  run.tracker.log_summary(summary)
  run.tracker.close()
  print(records.done_line(summary, plan, run.workdir, _composed_ancestors(exp),
                          final_accuracies, selected, run.clock.num_segments),
        flush=True)
  for warning in warnings:
    print(f'warning: {warning}', flush=True)
  if run.randomness.insecure:
    print(f'WARNING: {mechanism_secret.INSECURE_WARNING}', flush=True)
  return summary


def _final_evaluation(run: Run) -> tuple[dict, dict | None]:
  """The final parameters' accuracies, the final metrics row, and (with
  select_on_validation) the step whose parameters are exported."""
  exp, step, plan = run.exp, run.step, run.plan
  final_accuracies = actions_lib.accuracies(run)
  selected = None
  if run.on_validation is not None:  # the final evaluation competes; the best exported
    run.on_validation.offer(step, run.eval_params(), final_accuracies)
    selected = {**run.on_validation.best, 'final_step': step}
    eps = run.epsilon_at(step)
    export.export_params(run.workdir, run.on_validation.params() if run.writer else {},
                            step=selected['step'], epsilon=eps, delta=plan.delta,
                            selected_on_validation=selected, **exp.composed_total(eps))
  input_pipeline.close(exp.data.test, exp.validation)
  final_row = run.final_row or {  # None: resumed from the final checkpoint
      'step': step, 'epoch': actions_lib.epoch(step, plan),
      'epsilon': run.epsilon_at(step)}
  final_row.update(final_accuracies)
  if not _has_evaluation_row(run.workdir, step):  # else an earlier attempt wrote it
    run.metrics.write(final_row)
  run.metrics.close()
  run.tracker.log_metrics(final_row, step)
  if 'train_loss' in final_row:
    run.progress.log(step, final_row['epsilon'], final_row['train_loss'],
                     final_row['images_per_sec'],
                     test_accuracy=final_accuracies['test_accuracy'],
                     validation_accuracy=final_row.get('validation_accuracy'))
  return final_accuracies, selected


def _description(run: Run) -> dict:
  exp = run.exp
  return {'model': run.config.model.name, 'dataset': run.config.data.name,
          'num_params': exp.num_params, 'image_shape': list(exp.image_shape),
          'num_classes': exp.data.num_classes,
          'class_names': list(exp.data.class_names) or None,
          'device': mesh_lib.describe(exp.devices),
          'test_on_private_data': bool(exp.data.private_evaluation_note)}


def _composed_ancestors(exp: experiment_lib.Experiment) -> int:
  return sum(1 for a in (exp.pretrained or {}).get('lineage', []) if a.get('composed'))


def _stop_after_the_last_step(run: Run, unwritten: str) -> None:
  """A signal after the final checkpoint and export: stop before ``unwritten`` (the
  evaluation, the run files), which the same command then writes without training."""
  try:
    run_control.stop_if_requested(
        f'after the last step ({run.step} of {run.plan.steps})',
        f'the final checkpoint and export/ are saved, {unwritten} not yet: the same '
        'command writes them without training', run.step, run.plan.steps)
  except run_control.Stopped:
    run.metrics.close()
    run.tracker.close()
    raise


class _NoMetrics:
  """metrics.jsonl on the processes that do not write (all but process 0)."""

  def write(self, row):
    del row

  def close(self):
    pass


def _has_evaluation_row(workdir: str, step: int) -> bool:
  """Whether metrics.jsonl already holds step's row with its test accuracy."""
  try:
    with open(os.path.join(workdir, run_files.METRICS)) as f:
      rows = [json.loads(line) for line in f if line.strip()]
  except (OSError, ValueError):
    return False
  return any(r.get('step') == step and 'test_accuracy' in r for r in rows)
