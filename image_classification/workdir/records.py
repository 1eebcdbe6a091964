"""The run's records: plan.json, privacy.json, privacy.md and summary.json, and the
console lines that say the same (the dry run's, the `done:` line, a finished run's).

Process 0 alone writes them (``writer``). What each file holds is documented in
docs/run_files.md; none of them holds anything secret (invariant 2 of
docs/privacy.md): the plan, the epsilon spent, metrics computed without noise are
marked in ``computed_without_noise``. Printed epsilons and deltas are rounded up
(reporting/round_up.py).
"""
import os

from image_classification.privacy import mechanism_secret
from image_classification.reporting import privacy_report
from image_classification.reporting import round_up
from image_classification.workdir import resume
from image_classification.workdir import run_files


# ------------------------------------------------------------------ a finished run


def already_complete(workdir: str) -> dict | None:
  """A complete run's summary.json, announced; None when the workdir holds none."""
  done = resume.completed_summary(workdir)
  if done is None:
    return None
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


# ------------------------------------------------------------------ the dry run


def write_dry_run(workdir: str, plan_json: dict, memory, plan, description: str,
                  writer: bool) -> dict:
  """plan.json with the memory estimate, and the dry run's line."""
  out = {**plan_json, 'memory_estimate': memory.to_json()}
  if writer:
    run_files.write_json(workdir, run_files.PLAN, out)
  print(f'dry run: {description}; {plan.steps} steps, '
        f'q={plan.sampling_rate:.4g}, sigma={plan.noise_multiplier:.4f}, '
        f'epsilon={round_up.round_up(plan.epsilon, decimals=4)} at '
        f'delta={round_up.round_up(plan.delta, 3)}; wrote '
        f'{os.path.join(workdir, run_files.PLAN)}\n{memory.describe()}', flush=True)
  return out


# ------------------------------------------------------------------ privacy files


def write_privacy_progress(workdir: str, privacy: dict, writer: bool) -> None:
  """privacy.json as of a checkpoint (steps taken so far, the epsilon spent)."""
  if writer:
    run_files.write_json(workdir, run_files.PRIVACY, privacy)


def final_privacy(privacy: dict, plan, step: int, selected: dict | None) -> dict:
  """privacy.json of the finished run: the epsilon of both accountants, and the
  selected step when the exported parameters were chosen on validation."""
  privacy = dict(privacy)
  if not plan.non_private:
    other = 'pld' if plan.accountant == 'rdp' else 'rdp'
    cross = {plan.accountant: privacy['epsilon']}
    try:
      cross[other] = plan.ledger(other).epsilon(step)
    except ValueError:
      cross[other] = None
    privacy['epsilon_rdp'], privacy['epsilon_pld'] = cross['rdp'], cross['pld']
  if selected is not None:
    privacy['selected_on_validation'] = selected
    privacy['computed_without_noise'] = (privacy['computed_without_noise']
                                         + ['selected_step'])
  return privacy


def write_final_privacy(workdir: str, privacy: dict, writer: bool) -> None:
  """privacy.json and privacy.md of the finished run."""
  if writer:
    run_files.write_json(workdir, run_files.PRIVACY, privacy)
    with open(os.path.join(workdir, run_files.PRIVACY_MD), 'w') as f:
      f.write(privacy_report.privacy_markdown(privacy, privacy.get('epsilon_rdp'),
                                              privacy.get('epsilon_pld')))


# ------------------------------------------------------------------ summary.json


def summary(*, outcome: dict, plan, insecure: bool, clock, start_step: int,
            startup_sec, audit_result, use_ema: bool, description: dict,
            final_accuracies: dict, selected: dict | None, total: dict,
            warnings: list[str]) -> dict:
  """summary.json: the run's outcome, its privacy, where its time went.

  ``outcome``: test_accuracy, epsilon, steps; ``description``: model, dataset,
  num_params, image_shape, num_classes, class_names, device; ``total``: the
  composition with pre-trained ancestors on the same data ({} when none).
  """
  out = {
      **({'WARNING': mechanism_secret.INSECURE_WARNING} if insecure else {}),
      'status': 'complete', 'test_accuracy': outcome['test_accuracy'],
      'epsilon': outcome['epsilon'], 'delta': plan.delta, 'steps': outcome['steps'],
      'noise_multiplier': plan.noise_multiplier,
      # Over every segment of the run (starts and resumes), and this segment alone.
      'wall_time_sec': clock.total(), 'wall_time_sec_last_segment': clock.last_segment(),
      'segments': clock.num_segments, 'resumed_from_step': start_step,
      'startup_sec': startup_sec,
      'audit_epsilon_lower_bound': (None if audit_result is None
                                    else audit_result['epsilon_lower_bound']),
      'non_private': plan.non_private,
      'insecure_seeded_noise': plan.insecure_seeded_noise,
      'evaluated_with_ema': use_ema, 'model': description['model'],
      'dataset': description['dataset'], 'num_params': description['num_params'],
      'image_shape': description['image_shape'],
      'num_classes': description['num_classes'],
      'class_names': description['class_names'],
      'device': description['device'],
      # The test split was carved out of the private training data (its accuracy is
      # released without noise; privacy.json's evaluation_data says how).
      'test_on_private_data': bool(description.get('test_on_private_data')),
      # The run trained but did not learn (reporting/run_checks.py); [] when it did.
      'warnings': warnings}
  if 'validation_accuracy' in final_accuracies:
    out['validation_accuracy'] = final_accuracies['validation_accuracy']
  if selected is not None:  # the exported parameters are the selected step's
    out.update(
        selected_step=selected['step'], test_accuracy=selected['test_accuracy'],
        validation_accuracy=selected['validation_accuracy'],
        final_step_test_accuracy=final_accuracies['test_accuracy'],
        final_step_validation_accuracy=final_accuracies['validation_accuracy'])
  out.update(total)
  return out


def write_summary(workdir: str, summary_json: dict, writer: bool) -> None:
  if writer:
    run_files.write_json(workdir, run_files.SUMMARY, summary_json)


# ------------------------------------------------------------------ the done line


def done_line(summary_json: dict, plan, workdir: str, composed_ancestors: int,
              final_accuracies: dict, selected: dict | None, num_segments: int) -> str:
  """The console's last line of a run: accuracy at (epsilon, delta), rounded up."""
  eps = summary_json['epsilon']
  eps_text = ('inf (NON-PRIVATE)' if plan.non_private
              else round_up.round_up(eps, decimals=3))
  label = (privacy_report.PRIVATE_TEST_LABEL if summary_json.get('test_on_private_data')
           else '')
  return (f'done: test accuracy {summary_json["test_accuracy"]:.4f}{label} at '
          f'(epsilon={eps_text}, delta={round_up.round_up(plan.delta, 3)})'
          f'{_total_text(summary_json, composed_ancestors)} after '
          f'{summary_json["steps"]} steps in {summary_json["wall_time_sec"]:.0f}s'
          + (f' ({num_segments} segments, this one '
             f'{summary_json["wall_time_sec_last_segment"]:.0f}s)'
             if num_segments > 1 else '')
          + (f'; exported the parameters of step {selected["step"]}, the best '
             f'validation accuracy {selected["validation_accuracy"]:.4f} (private data, '
             f'no noise; the final step: test accuracy '
             f'{final_accuracies["test_accuracy"]:.4f}{label})' if selected else '')
          + f'; run files in {workdir}')


def _total_text(summary_json: dict, composed_ancestors: int) -> str:
  """The done line's total with the composed ancestors (rounded up), or ''."""
  if 'total_epsilon_with_pretrained' not in summary_json:
    return ''
  return (f'; total with {composed_ancestors} earlier run(s) on the same data (basic '
          'composition): (epsilon='
          f'{round_up.round_up(summary_json["total_epsilon_with_pretrained"], decimals=3)}, '
          f'delta={round_up.round_up(summary_json["total_delta_with_pretrained"], 3)})')
