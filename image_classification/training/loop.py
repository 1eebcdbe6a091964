"""The training loop: validate -> load data -> privacy plan -> model -> DP-SGD steps ->
evaluation -> run files. ``train(config, workdir)`` is what launch.py calls.

Running the same command again with the same workdir resumes from the latest usable
checkpoint (see workdir/resume.py for why that is exact and what it means for
privacy); a finished run is reported, not retrained; a workdir of another config is
refused.

Long runs (workdir/run_control.py): checkpoints every checkpoint_every_minutes of
wall time; Ctrl-C / SIGTERM finish the step, checkpoint and raise run_control.Stopped.
The final checkpoint and the export of the final parameters (trained/inference.py)
come before the final evaluation and the run files, so nothing that fails after the
last step loses the training: the same command then only evaluates and writes them.
"""
import json
import math
import os
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from image_classification import config as config_lib
from image_classification import optimizers
from image_classification import plan as plan_lib
from image_classification.data import catalog
from image_classification.data import fingerprint
from image_classification.input import input_pipeline
from image_classification.input import prefetch
from image_classification.data import sources
from image_classification.data import validation
from image_classification.models import checks
from image_classification.models import custom as custom_models
from image_classification.models import features as features_lib
from image_classification.models import registry
from image_classification.privacy import batch_selection
from image_classification.privacy import mechanism_secret
from image_classification.privacy import privatizers
from image_classification.reporting import privacy_report
from image_classification.reporting import progress as progress_lib
from image_classification.reporting import round_up
from image_classification.reporting import run_checks
from image_classification.workdir import run_files
from image_classification import stop_signals
from image_classification.reporting import wandb_logger
from image_classification.training import canary_slots
from image_classification.workdir import checkpoint_store
from image_classification.training import distributed
from image_classification.training import dp_step
from image_classification.training import evaluation
from image_classification.training import experiment as experiment_lib
from image_classification.trained import inference
from image_classification.training import mesh as mesh_lib
from image_classification.trained import pretrained
from image_classification.training import resources
from image_classification.workdir import resume
from image_classification.workdir import run_control
from image_classification.workdir import secret_file
from image_classification.training import selection as selection_lib

def _stats_row(stats: dict) -> dict:
  n = float(stats['num_examples'])
  return {'train_loss': float(stats['loss_sum']) / max(n, 1.0),
          'clip_fraction': float(stats['num_clipped']) / max(n, 1.0),
          'nonfinite_gradients': int(stats['num_nonfinite'])}


@resources.translate_errors  # out of memory or disk: one line naming the fix
@stop_signals.deferring  # a signal is acted on at the safe points (run_control.py)
def train(config: ml_collections.ConfigDict, workdir: str, dry_run: bool = False,
          dataset=None, audit=None) -> dict:
  """Runs one experiment; returns summary.json's content (plan.json's for dry runs).

  Resumes from WORKDIR/checkpoints when the workdir holds an unfinished run of the same
  config; the ledger continues from the restored step, it is never reset.

  ``audit`` is the run hook of config.audit (image_classification.audit.hook, which sits
  above training and is not imported here): its ``prepare(dataset)`` runs before the
  privacy plan, its ``finish(...)`` after the final evaluation. A config with the audit
  on and no hook is refused.
  """
  start = time.time()
  writer = distributed.is_writer()  # process 0 alone writes the run files and prints
  # Every process of a job must run the same config (the same batches, the same step).
  distributed.check_same(json.dumps(config.to_dict(), sort_keys=True, default=str),
                         'config')
  # Before loading anything; a dry run too, so that its plan.json never contradicts
  # the run files of another config already in the workdir.
  resume.check_config(workdir, config)
  if not dry_run:
    done = resume.completed_summary(workdir)
    if done is not None:
      print(f'{workdir} already holds a complete run (test accuracy '
            f'{done.get("test_accuracy")} at epsilon='
            f'{round_up.round_up(done.get("epsilon"), decimals=3)} after '
            f'{done.get("steps")} steps): nothing to do. Use another --workdir to train '
            'again.', flush=True)
      if not os.path.exists(os.path.join(workdir, run_files.EXPORT, run_files.PARAMS)):
        print(f'note: its {run_files.EXPORT}/{run_files.PARAMS} is missing (deleted or '
              'moved?): --evaluate and --predict use its final checkpoint instead',
              flush=True)
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
  exp.plan = plan = exp.plan.with_strategy(workdir)
  # Memory per device (advisory: a warning when it exceeds what the device has).
  memory = resources.estimate(exp.model, exp.abstract_params, exp.image_shape, config,
                              plan, exp.devices, exp.per_example_grads)
  if writer and resources.memory_warning(memory, config):
    print(f'warning: {resources.memory_warning(memory, config)}', flush=True)
  if dry_run:
    out = {**exp.plan_json(), 'memory_estimate': memory.to_json()}
    if writer:
      run_files.write_json(workdir, run_files.PLAN, out)
    print(f'dry run: {config.model.name} ({exp.num_params:,} parameters) on '
          f'{config.data.name} (N={exp.dataset_size}, images '
          f'{"x".join(map(str, exp.image_shape))}, {exp.data.num_classes} classes); '
          f'{plan.steps} steps, '
          f'q={plan.sampling_rate:.4g}, sigma={plan.noise_multiplier:.4f}, '
          f'epsilon={round_up.round_up(plan.epsilon, decimals=4)} at '
          f'delta={round_up.round_up(plan.delta, 3)}; wrote '
          f'{os.path.join(workdir, run_files.PLAN)}\n{memory.describe()}', flush=True)
    return out

  if writer:
    run_files.write_json(workdir, run_files.CONFIG, config.to_dict())
  checkpoints = checkpoint_store.Checkpoints(workdir)
  # The noise key and the batch-selection seed: secret, from the workdir's private file
  # (drawn from OS entropy for a new run); never derived from config.seed unless the
  # insecure testing switch is on. With several processes, process 0 reads or creates
  # the file and broadcasts the secret: every process draws the same batches and noise.
  # Without the file, an earlier attempt's metrics rows (no checkpoint) refuse a new one.
  randomness = distributed.shared_randomness(
      workdir, config.seed, plan.insecure_seeded_noise, resuming=bool(checkpoints.steps()),
      released_rows=len(run_files.read_metrics(workdir)[0]) if writer else 0)
  if randomness.insecure:
    print(f'WARNING: {mechanism_secret.INSECURE_WARNING}', flush=True)
  inference.write_model_card(workdir, inference.model_card(
      config, exp.images, tuple(exp.images.train.image_shape)))

  t = config.training
  base_key = jax.random.PRNGKey(config.seed)  # public: initialisation and augmentation
  variables = exp.init_variables(jax.random.fold_in(base_key, experiment_lib.INIT_STREAM))
  optimizer, schedule = optimizers.make_optimizer(t, plan.steps)
  params = variables['params']
  if config.model.pretrained_path:  # fine-tuning: public weights, a fresh head
    params = pretrained.load_pretrained(config.model.pretrained_path, params)
  privatizer = plan.privatizer()
  # The batch selection draws from the secret sampling seed; the ledger accounts it.
  selection = plan.batch_selection(randomness.sampling_seed)
  state = dp_step.init_state(params, optimizer, config.model.train_only_head, privatizer)
  ndev = len(exp.devices)
  capacity = selection.capacity(ndev * max(t.micro_batch_size, 1))
  # capacity is a multiple of devices x micro-batch, so micro-batches tile each shard.
  step_cfg = dp_step.step_config(
      config, clipping_norm=plan.clipping_norm,
      expected_batch_size=plan.expected_batch_size, mean=exp.data.mean,
      std=exp.data.std, per_example_grads=exp.per_example_grads)
  # The gradient audit's canaries (training/canary_slots.py); None without that audit.
  canaries = (exp.audit.step_canaries(state.params, plan) if exp.audit is not None
              else None)
  step_fn = dp_step.DPStep(exp.model.apply, optimizer, step_cfg, exp.mesh, base_key,
                           noise_key=randomness.noise_key(), privatizer=privatizer,
                           canaries=canaries)
  ledger = plan.ledger()
  eval_fn = evaluation.make_eval_fn(exp.model.apply, tuple(exp.data.mean),
                                    tuple(exp.data.std))
  use_ema = t.ema.decay > 0
  sharding = mesh_lib.batch_sharding(exp.mesh)
  state = jax.device_put(state, mesh_lib.replicated(exp.mesh))

  def epsilon_at(step):
    return math.inf if plan.non_private else ledger.epsilon(step)

  def write_privacy(step):
    if writer:
      run_files.write_json(workdir, run_files.PRIVACY,
                         exp.privacy_json(step, epsilon_at(step)))

  restored = checkpoints.restore_latest(state)
  start_step = 0
  if restored is not None:
    resume.check_resume(restored.metadata, config.seed, plan, epsilon_at)
    state, start_step = restored.state, restored.step
    # Checkpoints never hold the noise state (it is secret): rebuild it from the key.
    state = state.replace(noise_state=jax.device_put(
        privatizers.replay(privatizer, state.params, randomness.noise_key(), start_step),
        mesh_lib.replicated(exp.mesh)))
    print(f'resuming from the checkpoint of step {start_step} in '
          f'{checkpoints.directory} (epsilon spent so far '
          f'{round_up.round_up(epsilon_at(start_step), decimals=4)}; '
          'the ledger continues from there)', flush=True)
  elif os.path.exists(os.path.join(workdir, run_files.METRICS)):
    print(f'{workdir} holds an earlier attempt that stopped before its first '
          'checkpoint: starting from step 0', flush=True)
  run_control.stop_if_requested(
      f'before the first step of this attempt (step {start_step} of {plan.steps})',
      f'nothing new to save (the checkpoint of step {start_step} is kept)' if restored
      else 'nothing was trained yet, so nothing was saved', start_step, plan.steps)
  write_privacy(start_step)
  # training.select_on_validation: the best evaluation's parameters so far.
  on_validation = (selection_lib.Selection(
      workdir, start_step if restored is not None else None, writer)
               if t.get('select_on_validation', False) else None)
  tracker = wandb_logger.WandbLogger(config, workdir, active=jax.process_index() == 0)
  tracker.log_privacy(exp.plan_json())

  def batch_of(step):
    """Step's logical batch as global arrays, and its number of real examples. Every
    process draws the same indices; each reads only the rows its devices hold."""
    indices = selection.indices(step)
    load = lambda idx: exp.data.train.get(idx, step=step)
    return [distributed.global_batch(sharding, idx, mask, load)
            for idx, mask in batch_selection.pad_chunks(indices, capacity)], len(indices)

  print(f'{config.model.name} ({exp.num_params:,} params) on {config.data.name} '
        f'(N={exp.dataset_size}, images {"x".join(map(str, exp.image_shape))}, '
        f'{exp.data.num_classes} classes) | {mesh_lib.describe(exp.devices)} | '
        f'{plan.steps} steps '
        f'of expected batch {plan.expected_batch_size} x augmult {config.data.augmult} | '
        + ('NON-PRIVATE (no noise)' if plan.non_private else
           f'sigma={plan.noise_multiplier:.4f}, C={plan.clipping_norm}, target '
           f'eps={plan.target_epsilon} at delta={round_up.round_up(plan.delta, 3)} '
           f'({plan.accountant}, '
           f'{plan.sampling})'), flush=True)

  # Rows after the restored step are dropped: those steps are redone.
  metrics = (run_files.MetricsWriter(
      workdir, truncate_after_step=start_step if restored is not None else None)
             if writer else _NoMetrics())
  progress = progress_lib.Progress(
      plan.steps, images_per_step=plan.expected_batch_size * config.data.augmult,
      epochs_per_step=plan.expected_batch_size / exp.dataset_size)
  log_every = max(1, t.log_every_steps or plan.steps)
  pending, images_seen, timer = [], 0, None
  control = run_control.RunControl(t.get('checkpoint_every_minutes', 0.0))
  clock = run_control.WallClock(workdir, start_step, start_time=start)

  def save_checkpoint(state, step):
    checkpoints.save(privatizers.publishable(state),  # no secret noise state
                     resume.make_metadata(config.seed, step, epsilon_at(step), plan))
    write_privacy(step)
    control.checkpoint_saved()
    if on_validation is not None:
      on_validation.prune(checkpoints.steps())
    clock.update(step)

  def accuracies(state) -> dict:
    return _accuracies(eval_fn, state.eval_params(use_ema), exp, t.eval_batch_size)

  final_row = None
  startup_sec = None  # launch to the end of the first step: loading and compiling
  step = int(state.step)
  # The next batches are read in the background while the devices compute; the thread
  # is stopped however the loop ends (the last step, an exception, Ctrl-C).
  batches = prefetch.Prefetcher(batch_of, range(step, plan.steps),
                                depth=config.data.get('prefetch', 0))
  with control, progress, batches:
    while step < plan.steps:  # epsilon is monotone in steps: the plan is the budget guard
      chunks, num_real = batches.get(step)
      state, stats = step_fn.run(state, chunks)
      if canaries is not None:  # step `step`'s privatized gradient at the canaries
        exp.audit.observe(step, stats.pop(canary_slots.OBSERVATION))
      pending.append(stats)
      step += 1
      if timer is None:  # the first step of a start or resume compiles; time from its end
        jax.block_until_ready(state.step)
        timer, images_seen = time.time(), 0
        startup_sec = timer - start
        progress.start(step)
      else:
        images_seen += num_real * config.data.augmult
      progress.step(step, epsilon_at, pending)
      final = step == plan.steps
      stop = not final and control.stop_requested()
      evaluate_now = (t.eval_every_steps and step % t.eval_every_steps == 0) or final
      row = None
      if step % log_every == 0 or evaluate_now or stop:
        summed = jax.tree_util.tree_map(lambda *x: sum(x), *jax.device_get(pending))
        elapsed = time.time() - timer
        row = {'step': step, 'epoch': _epoch(step, plan),
               'epsilon': epsilon_at(step),
               'images_per_sec': images_seen / max(elapsed, 1e-9),
               'learning_rate': float(schedule(step - 1)),
               'realized_batch_size': float(summed['num_examples']) / len(pending),
               **_stats_row(summed)}
      if final:  # before anything that could fail: the training is kept whatever follows
        save_checkpoint(state, step)
      if row is not None:
        if final:  # evaluated after the loop, once the parameters are exported
          final_row = row
        else:
          if evaluate_now:
            row.update(accuracies(state))
            if on_validation is not None:
              on_validation.offer(step, state.eval_params(use_ema), row)
          metrics.write(row)
          tracker.log_metrics(row, step)
          progress.log(step, row['epsilon'], row['train_loss'], row['images_per_sec'],
                       test_accuracy=row.get('test_accuracy'),
                       validation_accuracy=row.get('validation_accuracy'))
          clock.update(step, force=False)
        pending, timer, images_seen = [], time.time(), 0
      every = t.checkpoint_every_steps
      if not final and (stop or (every and step % every == 0)
                        or control.checkpoint_due()):
        # After the step's metrics row, so a resume from here keeps that row.
        save_checkpoint(state, step)
      if stop:
        metrics.close()
        checkpoints.close()
        tracker.close()
        raise control.stopped(step, plan.steps, checkpoints.directory)
  # The final checkpoint is saved (here or by an earlier attempt): export the final
  # parameters, then evaluate and write the run files.
  input_pipeline.close(exp.data.train)  # its worker processes, if any
  checkpoints.close()
  if on_validation is None:  # else the selected parameters are exported below
    inference.export_params(workdir, state.eval_params(use_ema), step=step,
                            epsilon=epsilon_at(step), delta=plan.delta,
                            **exp.composed_total(epsilon_at(step)))
  _stop_after_the_last_step(step, plan.steps, metrics, tracker,
                            'the final evaluation and the run files')
  final_accuracies = accuracies(state)
  selected = None
  if on_validation is not None:  # the final evaluation competes too; the best is exported
    on_validation.offer(step, state.eval_params(use_ema), final_accuracies)
    selected = {**on_validation.best, 'final_step': step}
    inference.export_params(workdir, on_validation.params() if writer else {},
                            step=selected['step'], epsilon=epsilon_at(step),
                            delta=plan.delta, selected_on_validation=selected,
                            **exp.composed_total(epsilon_at(step)))
  input_pipeline.close(exp.data.test, exp.validation)
  test_accuracy = final_accuracies['test_accuracy']
  if final_row is None:  # resumed from the final checkpoint: no step ran here
    final_row = {'step': step, 'epoch': _epoch(step, plan),
                 'epsilon': epsilon_at(step)}
  final_row.update(final_accuracies)
  if not _has_evaluation_row(workdir, step):  # else an earlier attempt wrote it
    metrics.write(final_row)
  metrics.close()
  tracker.log_metrics(final_row, step)
  if 'train_loss' in final_row:
    progress.log(step, final_row['epsilon'], final_row['train_loss'],
                 final_row['images_per_sec'], test_accuracy=test_accuracy,
                 validation_accuracy=final_row.get('validation_accuracy'))

  audit_result = None
  if exp.audit is not None:
    audit_result = exp.audit.finish(
        exp.model.apply, state.eval_params(use_ema), tuple(exp.data.mean),
        tuple(exp.data.std), plan, workdir)
  eps = epsilon_at(step)
  privacy = exp.privacy_json(step, eps)
  if not plan.non_private:
    other = 'pld' if plan.accountant == 'rdp' else 'rdp'
    cross = {plan.accountant: eps}
    try:
      cross[other] = plan.ledger(other).epsilon(step)
    except ValueError:
      cross[other] = None
    privacy['epsilon_rdp'], privacy['epsilon_pld'] = cross['rdp'], cross['pld']
  if selected is not None:
    privacy['selected_on_validation'] = selected
    privacy['computed_without_noise'] = (privacy['computed_without_noise']
                                         + ['selected_step'])
  if writer:
    run_files.write_json(workdir, run_files.PRIVACY, privacy)
    with open(os.path.join(workdir, run_files.PRIVACY_MD), 'w') as f:
      f.write(privacy_report.privacy_markdown(privacy, privacy.get('epsilon_rdp'),
                                              privacy.get('epsilon_pld')))
  clock.update(step)
  warnings = run_checks.run_warnings(
      [row.get('train_loss') for row in run_files.read_metrics(workdir)[0]]
      if writer else [], test_accuracy, exp.data.num_classes)
  _stop_after_the_last_step(step, plan.steps, metrics, tracker, 'summary.json')
  summary = {
      **({'WARNING': mechanism_secret.INSECURE_WARNING} if randomness.insecure else {}),
      'status': 'complete', 'test_accuracy': test_accuracy, 'epsilon': eps,
      'delta': plan.delta, 'steps': step, 'noise_multiplier': plan.noise_multiplier,
      # Over every segment of the run (starts and resumes), and this segment alone.
      'wall_time_sec': clock.total(), 'wall_time_sec_last_segment': clock.last_segment(),
      'segments': clock.num_segments, 'resumed_from_step': start_step,
      'startup_sec': startup_sec,
      'audit_epsilon_lower_bound': (None if audit_result is None
                                    else audit_result['epsilon_lower_bound']),
      'non_private': plan.non_private,
      'insecure_seeded_noise': plan.insecure_seeded_noise,
      'evaluated_with_ema': use_ema, 'model': config.model.name,
      'dataset': config.data.name, 'num_params': exp.num_params,
      'image_shape': list(exp.image_shape), 'num_classes': exp.data.num_classes,
      'class_names': list(exp.data.class_names) or None,
      'device': mesh_lib.describe(exp.devices),
      # The run trained but did not learn (reporting/run_checks.py); [] when it did.
      'warnings': warnings}
  if exp.validation is not None:
    summary['validation_accuracy'] = final_accuracies['validation_accuracy']
  if selected is not None:  # the exported parameters are the selected step's
    summary.update(
        selected_step=selected['step'], test_accuracy=selected['test_accuracy'],
        validation_accuracy=selected['validation_accuracy'],
        final_step_test_accuracy=final_accuracies['test_accuracy'],
        final_step_validation_accuracy=final_accuracies['validation_accuracy'])
    test_accuracy = selected['test_accuracy']
  total = exp.composed_total(eps)  # beside the run's own epsilon, when composed
  summary.update(total)
  if writer:
    run_files.write_json(workdir, run_files.SUMMARY, summary)
    secret_file.discard(workdir)  # complete: nothing will resume, nothing needs it
  if on_validation is not None:
    on_validation.discard()
  tracker.log_privacy(privacy)
  tracker.log_summary(summary)
  tracker.close()
  # Printed epsilons and deltas are rounded up (reporting/round_up.py).
  eps_text = ('inf (NON-PRIVATE)' if plan.non_private
              else round_up.round_up(eps, decimals=3))
  print(f'done: test accuracy {test_accuracy:.4f} at (epsilon={eps_text}, '
        f'delta={round_up.round_up(plan.delta, 3)}){_total_text(exp, total)} after '
        f'{step} steps in {summary["wall_time_sec"]:.0f}s'
        + (f' ({clock.num_segments} segments, this one '
           f'{summary["wall_time_sec_last_segment"]:.0f}s)'
           if clock.num_segments > 1 else '')
        + (f'; exported the parameters of step {selected["step"]}, the best '
           f'validation accuracy {selected["validation_accuracy"]:.4f} (private data, '
           f'no noise; the final step: test accuracy '
           f'{final_accuracies["test_accuracy"]:.4f})' if selected else '')
        + f'; run files in {workdir}', flush=True)
  for warning in warnings:
    print(f'warning: {warning}', flush=True)
  if randomness.insecure:
    print(f'WARNING: {mechanism_secret.INSECURE_WARNING}', flush=True)
  return summary


def _epoch(step: int, plan) -> float:
  """Passes over the training data after ``step`` steps, in expectation: step x B / N
  (metrics.jsonl's ``epoch``)."""
  return round(step * plan.expected_batch_size / plan.dataset_size, 4)


def _stop_after_the_last_step(step: int, total_steps: int, metrics, tracker,
                              unwritten: str) -> None:
  """A signal after the final checkpoint and export: stop before ``unwritten`` (the
  evaluation, the run files), which the same command then writes without training."""
  try:
    run_control.stop_if_requested(
        f'after the last step ({step} of {total_steps})',
        f'the final checkpoint and export/ are saved, {unwritten} not yet: the same '
        'command writes them without training', step, total_steps)
  except run_control.Stopped:
    metrics.close()
    tracker.close()
    raise


def _total_text(exp: experiment_lib.Experiment, total: dict) -> str:
  """The done line's total with the composed ancestors (rounded up), or ''."""
  if not total:
    return ''
  composed = [a for a in exp.pretrained['lineage'] if a.get('composed')]
  return (f'; total with {len(composed)} earlier run(s) on the same data (basic '
          'composition): (epsilon='
          f'{round_up.round_up(total["total_epsilon_with_pretrained"], decimals=3)}, '
          f'delta={round_up.round_up(total["total_delta_with_pretrained"], 3)})')


class _NoMetrics:
  """metrics.jsonl on the processes that do not write (all but process 0)."""

  def write(self, row):
    del row

  def close(self):
    pass


def _accuracies(eval_fn, params, exp: experiment_lib.Experiment, batch_size: int) -> dict:
  """test_accuracy, and validation_accuracy when a validation split is held out
  (computed from private training data without noise)."""
  out = {'test_accuracy': evaluation.evaluate(eval_fn, params, exp.data.test,
                                              batch_size, exp.mesh)}
  if exp.validation is not None:
    out['validation_accuracy'] = evaluation.evaluate(eval_fn, params, exp.validation,
                                                     batch_size, exp.mesh)
  return out


def _has_evaluation_row(workdir: str, step: int) -> bool:
  """Whether metrics.jsonl already holds step's row with its test accuracy."""
  try:
    with open(os.path.join(workdir, run_files.METRICS)) as f:
      rows = [json.loads(line) for line in f if line.strip()]
  except (OSError, ValueError):
    return False
  return any(r.get('step') == step and 'test_accuracy' in r for r in rows)
