"""What a run decides before its first step, compiling nothing: the validated config,
the data (held-out split, audit canaries, fixed features), the privacy plan, the model
and the pre-trained lineage. A dry run, a sweep's check of every point and a real run
all build one; plan.json and privacy.json are its description.
"""
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from image_classification import config as config_lib
from image_classification import plan as plan_lib
from image_classification.data import catalog
from image_classification.data import sources
from image_classification.data import validation
from image_classification.models import checks
from image_classification.models import custom as custom_models
from image_classification.models import features as features_lib
from image_classification.models import registry
from image_classification.trained import pretrained
from image_classification.training import dp_step
from image_classification.training import mesh as mesh_lib

# The stream of the base key the initial parameters are drawn from.
INIT_STREAM = 0x1417


class Experiment:
  """Everything a run needs that is decided before the first step (no compilation)."""

  def __init__(self, config: ml_collections.ConfigDict, dry_run: bool = False,
               dataset=None, audit=None):
    """``audit``: the run's audit hook (image_classification.audit.hook) or None."""
    self.config = config
    self.devices = jax.devices()
    self.mesh = mesh_lib.make_mesh(self.devices)
    config_lib.validate(config, len(self.devices), dry_run=dry_run)
    # A dry run of a tfds dataset uses its published size and shape: nothing is
    # downloaded or decoded. Local files are opened, which checks that they exist.
    self.data = (dataset or (catalog.dry_run_splits(config.data) if dry_run else None)
                 or sources.load_dataset(config.data))
    # Held out before the plan: the accountant's N is the training split that is left.
    self.data, self.validation = validation.hold_out(
        self.data, config.data.validation_fraction)
    # Before the plan: with an audit on, the accountant's N counts the included canaries.
    if config.audit.enabled and audit is None:
      raise config_lib.ConfigError(
          'config.audit.enabled=True needs the audit hook: run through launch.py, or '
          'call image_classification.runs.train / check')
    self.audit = audit
    if audit is not None:
      self.data = audit.prepare(self.data)
    # A fixed public feature extractor (config.model.features): every image, the
    # held-out ones too, replaced by its features once, before the first step.
    # They are computed last (minutes for a large dataset), after every check below.
    self.features = self._feature_extractor(config)
    self.images = self.data  # what the model card describes: the images, not features
    self.dataset_size = self.data.train.num_examples
    config_lib.validate_with_data(config, self.dataset_size)
    self.plan = plan_lib.make_plan(config, self.dataset_size)  # PlanError: a ConfigError
    path = config.model.pretrained_path
    self.pretrained = (pretrained.composition(
        path, config.data, plan_lib.composes_with_pretrained_run(config))
                       if path and os.path.exists(path) else None)
    # What the model sees: the features' shape where an extractor computes them.
    self.image_shape = tuple(self.features.output_shape if self.features is not None
                             else self.data.train.image_shape)
    try:  # a bad model kwarg fails here, in tracing, before anything compiles
      self.model = registry.build(
          config.model.name, self.data.num_classes,
          compute_dtype=config.training.compute_dtype,
          **config.model.kwargs.to_dict())
      # BatchNorm or other cross-example state refused, naming the layer.
      abstract = checks.inspect(self.model, self.image_shape, self.data.num_classes,
                                config.model.name)
    except checks.ModelError:  # a ConfigError that names the layer: as it is
      raise
    except (TypeError, ValueError) as e:
      raise config_lib.ConfigError(
          f'config.model.kwargs={config.model.kwargs.to_dict()} do not build model '
          f'{config.model.name!r} for images {self.image_shape}: {e}') from e
    # The user's own model: the fast paths' layer rules where they cover it, else
    # the reference 'vmap' (the package's models are covered; tests check them).
    self.per_example_grads, self.clipping_note = config.training.per_example_grads, None
    if custom_models.is_custom(config.model.name):
      self.per_example_grads, self.clipping_note = dp_step.covered_implementation(
          self.model.apply, abstract['params'], self.image_shape,
          self.per_example_grads, config.data.augmult)
    self.abstract_params = abstract['params']
    # Fine-tuning: the weights are read and fitted to the model now, so that a bad
    # file fails before any run file is written (a dry run or a sweep's check does not
    # read them); the trainer merges them into the initialised parameters.
    self.pretrained_weights = None
    if path and not dry_run:
      self.pretrained_weights = pretrained.read_params(path)
      pretrained.merge_pretrained(self.pretrained_weights, self.abstract_params,
                                  source=path)
    self.num_params = int(sum(np.prod(x.shape) for x in
                              jax.tree_util.tree_leaves(abstract['params'])))
    if audit is not None:  # e.g. the gradient audit's canaries need model coordinates
      audit.check_model(abstract['params'])
    # What the model sees of a raw image (the input audit's canaries): the image, or
    # its features.
    self.inputs_of = None
    if self.features is not None:  # every check has passed: the long part
      self.inputs_of = features_lib.of_images(self.features, self.data.mean,
                                              self.data.std)
      self.data, self.validation = features_lib.precompute(
          self.data, self.validation, self.features, compute=not dry_run,
          shift=int(config.model.features_shift))

  def _feature_extractor(self, config):
    name = config.model.features
    if not name:
      return None
    kwargs = config.model.features_kwargs.to_dict()
    try:
      return features_lib.build(name, self.data.train.image_shape, **kwargs)
    except ValueError as e:
      raise config_lib.ConfigError(
          f'config.model.features={name!r} with features_kwargs={kwargs} does not '
          f'build for images {tuple(self.data.train.image_shape)}: {e}') from e

  def init_variables(self, key):
    """The model's variables drawn from ``key`` (the run's init stream)."""
    dummy = jnp.zeros((1,) + self.image_shape, jnp.float32)
    return self.model.init({'params': key, 'dropout': key}, dummy, is_training=False)

  def plan_json(self) -> dict:
    d = self.plan.to_json()
    d.update(num_params=self.num_params, model=self.config.model.name,
             dataset=self.config.data.name, num_devices=len(self.devices),
             image_shape=list(self.image_shape), num_classes=self.data.num_classes,
             class_names=list(self.data.class_names) or None,
             pretrained_path=self.config.model.pretrained_path or None,
             large_delta=self.plan.large_delta)
    if self.features is not None:  # what the model sees instead of the images
      d['features'] = self.config.model.features
      d['public_prior'] = self.features.describe()
      shift = int(self.config.model.features_shift)
      if shift:  # fixed views: augmentation multiplicity without randomness
        d['public_prior'] += (
            f'; each training example as {features_lib.num_views(self.config)} fixed '
            f'views (the image and its shifts by {shift} pixel(s) down, up, right and '
            'left), its loss averaged over them before clipping')
    if self.data.private_evaluation_note:
      d['evaluation_data'] = self.data.private_evaluation_note
      d['computed_without_noise'] = d['computed_without_noise'] + ['test_accuracy']
    # Every ancestor of the pre-trained parameters, composed or assumed disjoint
    # (trained/pretrained.py); a descendant of this run reads it from here.
    d['lineage'] = (self.pretrained or {}).get('lineage', [])
    if self.pretrained is not None:
      d['pretrained'] = {k: v for k, v in self.pretrained.items() if k != 'lineage'}
    if self.clipping_note:  # the user's own model: which clipped-sum path trains it
      d['per_example_grads'] = self.per_example_grads
      d['per_example_grads_note'] = self.clipping_note
    if self.validation is not None:  # held out of N, evaluated without noise
      d['validation_size'] = self.validation.num_examples
      d['computed_without_noise'] = d['computed_without_noise'] + ['validation_accuracy']
    return d

  def composed_total(self, epsilon: float) -> dict:
    """{total_epsilon_with_pretrained, total_delta_with_pretrained}: this run and
    every ancestor on the same data, by basic composition; {} when none composes."""
    total = pretrained.composed_total((self.pretrained or {}).get('lineage', []),
                                      epsilon, self.plan.delta)
    return {} if total is None else {'total_epsilon_with_pretrained': total[0],
                                     'total_delta_with_pretrained': total[1]}

  def privacy_json(self, steps_taken: int, epsilon: float) -> dict:
    """privacy.json after ``steps_taken`` steps; with composed ancestors, the total.
    ``dataset_identity``: the training data as a descendant fine-tuned from this run
    must recognise it (trained/pretrained.py), with an image folder's or npz file's
    real path resolved here, where the run reads it (config.json keeps the path as
    typed, which may be relative to the directory the run was launched from)."""
    return {**self.plan_json(), 'steps_taken': steps_taken, 'epsilon': epsilon,
            'dataset_identity': pretrained.dataset_identity(self.config.data.to_dict()),
            **self.composed_total(epsilon)}


def check(config: ml_collections.ConfigDict, dataset=None, audit=None) -> Experiment:
  """Everything a dry run checks (config, data, privacy plan, model), writing nothing.

  A sweep calls it (through runs.check) on every point before training the first.
  Unlike a dry run it also needs model.pretrained_path to exist; it does not read the
  weights.
  """
  config_lib.validate(config, len(jax.devices()), dry_run=False)
  return Experiment(config, dry_run=True, dataset=dataset, audit=audit)
