"""privacy.md states what a reviewer must know first: insecure seeded noise, a large
delta, a pre-trained checkpoint, a private evaluation split, composition with an
earlier run."""
from image_classification import plan as plan_lib
from image_classification.privacy import batch_selection
from image_classification.privacy import mechanism_secret
from image_classification.reporting import privacy_report
from image_classification.workdir import secret_file


def _privacy(**extra):
  plan = plan_lib.PrivacyPlan(
      noise_multiplier=1.1, clipping_norm=1.0, sampling='poisson', sampling_rate=0.01,
      expected_batch_size=10, steps=100, delta=1e-5, epsilon=1.5, target_epsilon=2.0,
      accountant='rdp', neighboring_relation=batch_selection.PoissonSampling.neighboring_relation,
      dataset_size=1000, **extra)
  return {**plan.to_json(), 'steps_taken': 100}


def test_secret_randomness_is_described_without_a_warning():
  text = privacy_report.privacy_markdown(_privacy())
  assert 'INSECURE' not in text
  assert '256-bit secret' in text and secret_file.SECRET_FILE in text
  assert 'images_per_sec' in text  # listed among the figures computed without noise


def test_insecure_runs_say_so_in_their_first_lines():
  text = privacy_report.privacy_markdown(_privacy(insecure_seeded_noise=True))
  lines = text.splitlines()
  assert lines[2] == f'**{mechanism_secret.INSECURE_WARNING}**'


def test_private_evaluation_split_and_composition_are_stated():
  privacy = _privacy()
  privacy.update(evaluation_data='The evaluation split is private data.',
                 pretrained_path='/runs/a',
                 pretrained={'path': '/runs/a', 'assumption': 'composed',
                             'earlier_run': True, 'earlier_dataset': 'digits',
                             'earlier_epsilon': 2.0},
                 total_epsilon_with_pretrained=3.5, total_delta_with_pretrained=2e-5)
  text = privacy_report.privacy_markdown(privacy)
  assert 'The evaluation split is private data.' in text
  assert 'held-out evaluation split, not on training' not in text
  # A privacy.json of before lineages (only 'pretrained'): its parent is still named.
  assert 'generation 1: `/runs/a`, trained on digits (epsilon = 2, delta = n/a)' in text
  assert 'assumes that checkpoint was trained on public data' not in text
  assert 'epsilon = 3.5, delta = 2e-05' in text


def test_lineage_says_which_ancestors_were_composed_and_which_assumed_disjoint():
  privacy = _privacy()
  privacy.update(
      pretrained_path='/runs/c', total_epsilon_with_pretrained=7.0000001,
      total_delta_with_pretrained=1e-5 + 1e-5 + 1e-5,
      lineage=[
          {'generation': 1, 'path': '/runs/c', 'platform_run': True,
           'dataset': {'name': 'npz', 'path': '/data/x.npz'}, 'epsilon': 8.0,
           'delta': 1e-5, 'non_private': False, 'composed': False},
          {'generation': 2, 'path': '/runs/b', 'platform_run': True,
           'dataset': {'name': 'digits'}, 'epsilon': 3.96043, 'delta': 1e-5,
           'non_private': False, 'composed': True},
          {'generation': 3, 'path': '/runs/a', 'platform_run': True,
           'dataset': {'name': 'digits'}, 'epsilon': 1.5, 'delta': 1e-5,
           'non_private': False, 'composed': True},
          {'generation': 4, 'path': '/ckpt/imagenet.npz', 'platform_run': False,
           'composed': False}])
  lines = privacy_report.privacy_markdown(privacy).splitlines()
  start = lines.index(next(l for l in lines if l.startswith('- Fine-tuned from `/runs/c`')))
  assert lines[start + 1:start + 5] == [
      '  - generation 1: `/runs/c`, trained on npz at /data/x.npz (epsilon = 8, delta = '
      '1e-05): other data: **assumed disjoint** from this training set, not composed.',
      '  - generation 2: `/runs/b`, trained on digits (epsilon = 3.961, delta = 1e-05): '
      'the same data as this run: **composed** with it.',
      '  - generation 3: `/runs/a`, trained on digits (epsilon = 1.5, delta = 1e-05): '
      'the same data as this run: **composed** with it.',
      '  - generation 4: `/ckpt/imagenet.npz`, not written by a run of this platform: '
      'assumed trained on public data, disjoint from and independent of the private '
      'training set.']
  total = next(l for l in lines if 'Total with' in l)
  assert 'Total with the 2 earlier run(s) on the same data' in total
  assert 'epsilon = 7.001, delta = 3e-05' in total  # rounded up; float noise is not


def test_privacy_md_states_that_n_is_public_and_what_the_guarantee_covers():
  text = privacy_report.privacy_markdown(_privacy())
  assert 'N (the size of the training split) and the sampling rate q = B/N are ' \
      'treated as public' in text
  assert 'What the guarantee covers: the data you supplied' in text
  assert 'per-record function' not in text  # nothing was held out
  held = privacy_report.privacy_markdown(_privacy() | {'validation_size': 100})
  assert 'A validation split was held out of it, each record by a keyed hash' in held
  assert 'the training split is a per-record function of your data' in held
  assert 'moves no other' in held
  fixed = privacy_report.privacy_markdown(
      _privacy() | {'validation_size': 100, 'neighboring_relation': 'replace_one'})
  assert 'guarantee is for the training split as split' in fixed


def test_every_epsilon_and_delta_is_rounded_up():
  privacy = _privacy()
  privacy.update(epsilon=3.96043, delta=1.00001e-5)
  text = privacy_report.privacy_markdown(privacy, epsilon_rdp=3.96043,
                                         epsilon_pld=3.90001)
  assert 'delta = 1.01e-05; epsilon = 3.961 (RDP' in text
  assert 'epsilon under RDP = 3.961, under PLD = 3.901' in text
  assert '3.960' not in text and '3.96 ' not in text


def _hand_written_privacy(**extra):
  return {'mechanism': 'DP-SGD', 'sampling': 'poisson', 'sampling_rate': 0.1,
          'expected_batch_size': 8, 'dataset_size': 80,
          'neighboring_relation': 'add_or_remove_one', 'noise_multiplier': 1.0,
          'clipping_norm': 1.0, 'steps': 2, 'delta': 0.05, 'epsilon': 3.0,
          'accountant': 'rdp', 'computed_without_noise': ['train_loss'], **extra}


def test_privacy_md_opens_with_large_delta_and_names_the_pretrained_checkpoint():
  text = privacy_report.privacy_markdown(_hand_written_privacy(
      large_delta=True, pretrained_path='/ckpt/public.npz'))
  head = text.splitlines()[:6]
  assert head[2].startswith('**LARGE DELTA: delta = 0.05 is >= 1/N = 0.0125')
  assert 'privacy.allow_large_delta=True' in head[2]
  assert '`/ckpt/public.npz`' in head[4] and 'trained on public data' in head[4]
  plain = privacy_report.privacy_markdown(_hand_written_privacy(
      large_delta=False, pretrained_path=None))
  assert 'LARGE DELTA' not in plain and 'pre-trained' not in plain
