"""Planted-bug check of the privacy path (docs/testing.md keeps the table).

Each mutation is one small textual change to the library (old -> new, which must
occur exactly once) and the tests that must fail with it. Usage, from the repo root:

  python tests/mutation_check.py list
  python tests/mutation_check.py plant NAME     # edits the working tree; undo with
                                                # git checkout -- FILE
  python tests/mutation_check.py run [NAME...]  # plant, run its tests, restore; prints
                                                # 'caught' or 'NOT CAUGHT' per mutation

`run` restores the file even when interrupted. Run it on a clean checkout: it
refuses files with uncommitted changes. Not collected by pytest (no test_ prefix).
"""
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PY = sys.executable

W = 'tests/training/test_mechanism_wiring.py'
NB = 'tests/training/test_neighbouring_batches.py'
DPS = 'tests/training/test_dp_step.py'
EV = 'tests/training/test_evaluation_and_augmult.py'
REF = 'tests/privacy/test_accounting_references.py'
PE = 'tests/privacy/clipped_sums/test_per_example.py'
# The white-box gradient audit of the seeded eps-4 quickstart must stay at or below
# its epsilon (slow: one audited training run; docs/audit.md).
GA = ('tests/audit/test_gradient_audit_detection.py'
      '::test_seeded_gradient_audit_of_the_quickstart_stays_below_its_epsilon')

# name: (file, old, new, [pytest node ids that must fail])
MUTATIONS = {
    'clip_2c': (
        'image_classification/privacy/clipped_sums/per_example.py',
        'factors = jnp.minimum(1.0, clipping_norm / jnp.maximum(safe, 1e-12))',
        'factors = jnp.minimum(1.0, 2 * clipping_norm / jnp.maximum(safe, 1e-12))',
        [PE, NB + '::test_adding_one_example_moves_the_update_by_at_most_lr_c_over_b']),
    'clip_2c_gradient_audit': (
        # clip_2c's plant, in the clipping arithmetic every implementation and the
        # gradient canaries (training/canary_slots.py) share: canaries of raw norm 4C
        # then add 2C. Caught by the gradient audit's own bound.
        'image_classification/privacy/clipped_sums/per_example.py',
        'factors = jnp.minimum(1.0, clipping_norm / jnp.maximum(safe, 1e-12))',
        'factors = jnp.minimum(1.0, 2 * clipping_norm / jnp.maximum(safe, 1e-12))',
        [GA]),
    'normalise_by_realised': (
        'image_classification/training/dp_step.py',
        'lambda x: x / cfg.expected_batch_size, noisy)',
        "lambda x: x / jnp.maximum(stats['num_examples'], 1.0), noisy)",
        [DPS + '::test_normaliser_is_expected_not_realised_batch_size']),
    'noise_x0.5': (
        'image_classification/privacy/noise.py',
        'noisy = [x + stddev * z for x, z',
        'noisy = [x + 0.5 * stddev * z for x, z',
        [DPS + '::test_noise_is_drawn_once_with_std_sigma_c_over_b',
         W + '::test_trained_noise_std_is_lr_sigma_c_over_b_and_epsilon_is_what_ran']),
    'noise_x0.9': (
        'image_classification/privacy/noise.py',
        'noisy = [x + stddev * z for x, z',
        'noisy = [x + 0.9 * stddev * z for x, z',
        [DPS + '::test_noise_is_drawn_once_with_std_sigma_c_over_b',
         W + '::test_trained_noise_std_is_lr_sigma_c_over_b_and_epsilon_is_what_ran']),
    'noise_x0.95': (
        'image_classification/privacy/noise.py',
        'noisy = [x + stddev * z for x, z',
        'noisy = [x + 0.95 * stddev * z for x, z',
        [W + '::test_trained_noise_std_is_lr_sigma_c_over_b_and_epsilon_is_what_ran']),
    'pmean_not_psum': (
        'image_classification/training/dp_step.py',
        'return jax.lax.psum(total, mesh_lib.DATA_AXIS)',
        'return jax.lax.pmean(total, mesh_lib.DATA_AXIS)',
        [DPS + '::test_four_devices_equal_one_device',
         NB + '::test_same_bound_on_four_devices_without_micro_batching']),
    'nonfinite_not_zeroed': (
        'image_classification/privacy/clipped_sums/per_example.py',
        'valid = jnp.logical_and(mask, jnp.isfinite(norms))',
        'valid = mask',
        [PE,
         W + '::test_nonfinite_gradients_and_clip_fraction_in_metrics']),
    'fixed_event_sigma': (
        'image_classification/privacy/batch_selection.py',
        'dp_accounting.GaussianDpEvent(noise_multiplier / 2.0)',
        'dp_accounting.GaussianDpEvent(noise_multiplier)',
        ['tests/privacy/test_accounting.py', REF,
         W + '::test_fixed_size_sampling_and_replace_one_accounting']),
    'accountant_q_n_plus_1': (
        'image_classification/privacy/batch_selection.py',
        'return _poisson_event(self.sampling_rate, noise_multiplier, steps)',
        'return _poisson_event(self.expected_batch_size / (self.dataset_size + 1), '
        'noise_multiplier, steps)',
        ['tests/privacy/test_batch_selection.py',
         W + '::test_trained_noise_std_is_lr_sigma_c_over_b_and_epsilon_is_what_ran']),
    'sampler_q_n_plus_1': (
        'image_classification/privacy/batch_selection.py',
        'rng.random(self.dataset_size) < self.sampling_rate)',
        'rng.random(self.dataset_size) < self.expected_batch_size / (self.dataset_size + 1))',
        [W + '::test_poisson_sampling_rate_and_inclusion_through_the_trainer']),
    'fixed_sampler_with_replacement': (
        'image_classification/privacy/batch_selection.py',
        'rng.choice(self.dataset_size, self.expected_batch_size, replace=False)',
        'rng.choice(self.dataset_size, self.expected_batch_size, replace=True)',
        [W + '::test_fixed_size_sampling_and_replace_one_accounting']),
    'trainer_half_sigma': (
        # The plan stays right (privacy.json reports sigma); the trainer builds the
        # privatizer it hands the step from a plan with sigma / 2. (StepConfig's
        # noise_multiplier is not what the step adds once a privatizer is given.)
        'image_classification/training/loop.py',
        'privatizer = plan.privatizer()',
        "privatizer = type(plan)(**{**vars(plan), 'noise_multiplier': "
        "0.5 * plan.noise_multiplier}).privatizer()",
        [W + '::test_trained_noise_std_is_lr_sigma_c_over_b_and_epsilon_is_what_ran',
         GA]),
    'trainer_sampler_2b': (
        # In the trainer's draw (batch_of), not where `selection` is built: that one
        # also sizes the capacity from 2B, and with the test's 2B > N the capacity
        # formula raises (a crash, not the test's rate check, was what failed).
        'image_classification/training/loop.py',
        'indices = selection.indices(step)',
        "indices = type(run.plan)(**{**vars(run.plan), 'expected_batch_size': "
        "2 * run.plan.expected_batch_size}).batch_selection(run.randomness.sampling_seed)"
        '.indices(step)',
        [W + '::test_poisson_sampling_rate_and_inclusion_through_the_trainer', GA]),
    'augmult_views_clipped_separately': (
        'image_classification/training/dp_step.py',
        'random_flip=cfg.random_flip, mean=cfg.mean, std=cfg.std)\n',
        'random_flip=cfg.random_flip, mean=cfg.mean, std=cfg.std)\n'
        '    k = views.shape[1]\n'
        '    views = views.reshape((-1, 1) + views.shape[2:])\n'
        '    labels, mask = jnp.repeat(labels, k), jnp.repeat(mask, k)\n'
        '    drop_keys = jnp.repeat(drop_keys, k, axis=0)\n',
        [NB + '::test_adding_one_example_moves_the_update_by_at_most_lr_c_over_b',
         EV + '::test_fixed_views_are_averaged_per_example_before_clipping']),
    'no_varying_cast': (
        'image_classification/training/dp_step.py',
        "    trainable = jax.lax.pcast(trainable, mesh_lib.DATA_AXIS, to='varying')\n"
        "    frozen = jax.lax.pcast(frozen, mesh_lib.DATA_AXIS, to='varying')\n",
        '',
        [NB + '::test_same_bound_on_four_devices_without_micro_batching']),
    'fast_norm_underestimated': (
        'image_classification/privacy/clipped_sums/fast.py',
        '  norms = jnp.sqrt(sum(p.sq_norms for p in parts))\n',
        '  norms = 0.5 * jnp.sqrt(sum(p.sq_norms for p in parts))\n',
        [NB + '::test_adding_one_example_moves_the_update_by_at_most_lr_c_over_b']),
    'ghost_norm_underestimated': (
        'image_classification/privacy/clipped_sums/ghost.py',
        '  norms = jnp.sqrt(sq)\n',
        '  norms = 0.5 * jnp.sqrt(sq)\n',
        [NB + '::test_adding_one_example_moves_the_update_by_at_most_lr_c_over_b']),
    'overflow_chunks_dropped': (
        'image_classification/training/loop.py',
        'batch_selection.pad_chunks(indices, capacity)], len(indices)',
        'batch_selection.pad_chunks(indices, capacity)[:1]], len(indices)',
        [W + '::test_poisson_overflow_chunks_in_the_real_loop']),
    'noise_per_chunk': (
        'image_classification/training/dp_step.py',
        '      part = self.clipped_sum(state, *chunk, i, self.augment_key)\n',
        '      part = self.clipped_sum(state, *chunk, i, self.augment_key)\n'
        '      part = (noise.add_noise(part[0], jax.random.PRNGKey(i),\n'
        '                              self.cfg.clipping_norm),'
        ' part[1])\n',
        [W + '::test_poisson_overflow_chunks_in_the_real_loop']),
    'realized_is_expected': (
        'image_classification/training/actions.py',
        "'realized_batch_size': n / len(self.pending),",
        "'realized_batch_size': float(plan.expected_batch_size),",
        [W + '::test_poisson_sampling_rate_and_inclusion_through_the_trainer']),
    'clip_count_includes_invalid': (
        'image_classification/training/dp_step.py',
        "jnp.sum((valid & (norms > cfg.clipping_norm)).astype(jnp.float32))",
        "jnp.sum(mask.astype(jnp.float32))",
        [W + '::test_nonfinite_gradients_and_clip_fraction_in_metrics']),
    'nonfinite_count_includes_padding': (
        'image_classification/training/dp_step.py',
        "jnp.sum((mask & ~jnp.isfinite(norms)).astype(jnp.float32))",
        "jnp.sum((~jnp.isfinite(norms)).astype(jnp.float32))",
        [W + '::test_nonfinite_gradients_and_clip_fraction_in_metrics']),
    'cross_check_same_accountant': (
        'image_classification/workdir/records.py',
        'cross[other] = plan.ledger(other).epsilon(step)',
        'cross[other] = plan.ledger(plan.accountant).epsilon(step)',
        [W + '::test_pld_accountant_run_reports_pld_and_rdp_cross_check']),
    'eval_raw_not_ema': (
        'image_classification/training/loop.py',
        '    return self.state.eval_params(self.use_ema)',
        '    return self.state.eval_params(False)',
        [EV + '::test_evaluation_uses_ema_params_and_ignores_padding_on_four_devices']),
    'eval_counts_padding': (
        'image_classification/training/evaluation.py',
        'return jnp.sum(correct), jnp.sum(mask)',
        'return jnp.sum(correct), mask.shape[0]',
        [EV + '::test_evaluation_uses_ema_params_and_ignores_padding_on_four_devices']),
    'augmult_no_flip': (
        'image_classification/input/augmentation.py',
        'image = jnp.where(flip, image[:, ::-1, :], image)',
        'image = jnp.where(flip, image, image)',
        [EV + '::test_augmult_views_are_random_crops_and_flips_of_the_example']),
    'augmult_same_crop_for_all_views': (
        'image_classification/input/augmentation.py',
        'view_keys = jax.random.split(key, augmult)',
        'view_keys = jnp.stack([key] * augmult)',
        [EV + '::test_augmult_views_are_random_crops_and_flips_of_the_example']),
    'poisson_event_replace_one': (
        'image_classification/privacy/batch_selection.py',
        'rate, dp_accounting.GaussianDpEvent(noise_multiplier)), steps)',
        'rate, dp_accounting.GaussianDpEvent(noise_multiplier / 2)), steps)',
        [REF, W + '::test_trained_noise_std_is_lr_sigma_c_over_b_and_epsilon_is_what_ran']),
    # Invariant 18: augmentation keys an adversary can compute (from config.seed).
    'augment_key_from_seed': (
        'image_classification/training/loop.py',
        'augment_key=randomness.augment_key(),',
        'augment_key=jax.device_get(base_key),',
        ['tests/workdir/test_secret_file.py::'
         'test_the_step_augments_with_the_secrets_key_not_one_from_config_seed']),
    'crop_keyed_by_index': (
        'image_classification/input/on_disk.py',
        'return self.crop(picture, step, self.record_id(index)), int(self.labels[index])',
        'return self.crop(picture, step, str(index).encode()), int(self.labels[index])',
        ['tests/input/test_input_pipeline.py::'
         'test_a_file_added_to_the_folder_changes_no_other_files_crop']),
    # Invariant 16: an example's fixed views must be its own image, shifted.
    'fixed_views_of_the_neighbour': (
        'image_classification/models/features.py',
        '[features_of(shifted(images, dy, dx)) for dy, dx in shifts], -1)',
        '[features_of(shifted(np.roll(images, dy, 0), dy, dx)) for dy, dx in shifts], -1)',
        ['tests/training/test_features_training.py::'
         'test_shifted_views_are_the_features_of_each_shifted_image']),
}


def _plant(name):
  path, old, new, _ = MUTATIONS[name]
  full = os.path.join(ROOT, path)
  with open(full) as f:
    text = f.read()
  if text.count(old) != 1:
    raise SystemExit(f'{name}: the text to replace occurs {text.count(old)} times in '
                     f'{path} (the code changed: update tests/mutation_check.py)')
  with open(full, 'w') as f:
    f.write(text.replace(old, new))
  return full, text


def _run(name):
  dirty = subprocess.run(['git', 'status', '--porcelain', MUTATIONS[name][0]], cwd=ROOT,
                         capture_output=True, text=True, check=True).stdout.strip()
  if dirty:
    raise SystemExit(f'{MUTATIONS[name][0]} has uncommitted changes; commit or stash')
  full, original = _plant(name)
  try:
    results = []
    for test in MUTATIONS[name][3]:
      # '-m': the slow tests named here run too (pytest.ini deselects them by default).
      # '-n 0': one process (with pytest.ini's workers, -x ends as 'interrupted', 2).
      proc = subprocess.run([PY, '-m', 'pytest', '-q', '-x', '-n', '0', '-p',
                             'no:cacheprovider', '-m', 'slow or not slow', test],
                            cwd=ROOT,
                            capture_output=True, text=True, check=False)
      results.append((test, proc.returncode))
  finally:
    with open(full, 'w') as f:
      f.write(original)
  for test, rc in results:
    print(f'{name:34s} {"caught" if rc == 1 else f"NOT CAUGHT (rc={rc})":18s} {test}',
          flush=True)
  return all(rc == 1 for _, rc in results)


def main(argv):
  if not argv or argv[0] == 'list':
    for name, (path, _, _, tests) in MUTATIONS.items():
      print(f'{name:34s} {path:45s} {" ".join(tests)}')
    return 0
  if argv[0] == 'plant':
    _plant(argv[1])
    return 0
  if argv[0] == 'run':
    names = argv[1:] or list(MUTATIONS)
    ok = [_run(n) for n in names]
    return 0 if all(ok) else 1
  raise SystemExit(__doc__)


if __name__ == '__main__':
  sys.exit(main(sys.argv[1:]))
