"""privacy.md states what a reviewer must know first: insecure seeded noise, a private
evaluation split, composition with an earlier run."""
from image_classification import plan as plan_lib
from image_classification.privacy import batch_selection
from image_classification.privacy import mechanism_secret
from image_classification.reporting import run_files
from image_classification.training import secret_file


def _privacy(**extra):
  plan = plan_lib.PrivacyPlan(
      noise_multiplier=1.1, clipping_norm=1.0, sampling='poisson', sampling_rate=0.01,
      expected_batch_size=10, steps=100, delta=1e-5, epsilon=1.5, target_epsilon=2.0,
      accountant='rdp', neighboring_relation=batch_selection.PoissonSampling.neighboring_relation,
      dataset_size=1000, **extra)
  return {**plan.to_json(), 'steps_taken': 100}


def test_secret_randomness_is_described_without_a_warning():
  text = run_files.privacy_markdown(_privacy())
  assert 'INSECURE' not in text
  assert '256-bit secret' in text and secret_file.SECRET_FILE in text
  assert 'images_per_sec' in text  # listed among the figures computed without noise


def test_insecure_runs_say_so_in_their_first_lines():
  lines = run_files.privacy_markdown(_privacy(insecure_seeded_noise=True)).splitlines()
  assert lines[2] == f'**{mechanism_secret.INSECURE_WARNING}**'


def test_private_evaluation_split_and_composition_are_stated():
  privacy = _privacy()
  privacy.update(evaluation_data='The evaluation split is private data.',
                 pretrained_path='/runs/a',
                 pretrained={'path': '/runs/a', 'assumption': 'composed',
                             'earlier_run': True, 'earlier_dataset': 'digits',
                             'earlier_epsilon': 2.0},
                 total_epsilon_with_pretrained=3.5, total_delta_with_pretrained=2e-5)
  text = run_files.privacy_markdown(privacy)
  assert 'The evaluation split is private data.' in text
  assert 'held-out evaluation split, not on training' not in text
  assert 'earlier run of this platform on digits (epsilon 2): composed.' in text
  assert 'assumes that checkpoint was trained on public data' not in text
  assert 'epsilon = 3.5, delta = 2e-05' in text
