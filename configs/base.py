"""Defaults shared by every experiment. An experiment's get_config() starts from
base.get_config() and changes only what differs. Every field here can be overridden on
the command line: --config.training.batch_size=512. A new field goes here first.
"""
import ml_collections

# A config file may set only the fields defined below (launch.py refuses any other, so
# that a misspelt field is not kept beside the real one), except inside these groups,
# which are open on purpose: model.kwargs and model.features_kwargs hold the keyword
# arguments of the model's and the feature extractor's constructors, which differ from
# one to the other.
OPEN_GROUPS = ('model.kwargs', 'model.features_kwargs')


def get_config() -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.experiment = 'base'
  # The initialisation only (public randomness). The noise, the batches and the
  # augmentation and dropout keys never depend on it: they come from the run's secret
  # (docs/privacy.md; privacy.insecure_seeded_noise is the testing exception).
  config.seed = 0

  # ---------------------------------------------------------------- data
  config.data = ml_collections.ConfigDict()
  # digits | mnist | fashion_mnist | cifar10 | cifar100 | svhn_cropped |
  # imagenet2012 | image_folder | npz
  config.data.name = 'digits'
  # Local files in the dataset's original format; '' reads through tfds where the
  # dataset has a tfds builder.
  config.data.path = ''
  config.data.tfds_data_dir = ''
  config.data.image_size = 0          # 0 keeps the native size; else square resize.
  # Augmentation multiplicity K: each sampled example is seen as K augmented views;
  # their gradients are averaged before clipping (sensitivity stays C).
  config.data.augmult = 1
  config.data.random_crop = False     # 4-pixel reflect pad + random crop (CIFAR style)
  config.data.random_flip = False     # random horizontal flip
  config.data.random_resized_crop = False  # ImageNet style (train); centre crop at eval
  config.data.max_train_examples = 0  # 0 = all; >0 truncates (tests, quick looks)
  config.data.max_test_examples = 0
  # The number of classes, which fixes the model's head. 0 takes it from the dataset's
  # spec (the catalog for named datasets, the class folders of an image_folder); an npz
  # must set it (its labels are 0..num_classes-1). Never inferred from the labels.
  config.data.num_classes = 0
  # Hold out about this fraction of the training split (per record, by a keyed hash) as a
  # validation split for model selection; the accountant's N is what is left.
  config.data.validation_fraction = 0.0
  # Batches read (and put on the devices) in the background, this many steps ahead of
  # the step being computed; 0 reads each batch when its step starts. The batches are
  # the same either way (input/prefetch.py).
  config.data.prefetch = 2
  # Processes that decode on-disk images (input/input_pipeline.py; the same batches for
  # any count): -1 one per core (at most 32), 0 none (the loading thread decodes).
  config.data.num_workers = -1

  # ---------------------------------------------------------------- model
  config.model = ml_collections.ConfigDict()
  config.model.name = 'cnn'
  config.model.kwargs = ml_collections.ConfigDict()
  # A fixed, public feature extractor applied to every image before the model
  # (models/features.py): '' none, 'scattering' (ScatterNet, kwargs J and L). The
  # features are computed once before training; the model (e.g. 'feature_linear',
  # 'feature_cnn') is DP-trained on them. No augmentation with features.
  config.model.features = ''
  config.model.features_kwargs = ml_collections.ConfigDict()
  # With features: 0, or a shift s in pixels: each training example is the 5 fixed
  # views (the image, and the image shifted by s pixels up, down, left and right), its
  # gradient the mean of theirs before clipping (augmentation multiplicity on fixed,
  # public views; the features of every view are computed once, 5x the memory).
  config.model.features_shift = 0
  # Fine-tuning: restore parameters from this checkpoint, replace the head.
  config.model.pretrained_path = ''
  config.model.train_only_head = False

  # ---------------------------------------------------------------- privacy
  config.privacy = ml_collections.ConfigDict()
  config.privacy.target_epsilon = 4.0
  config.privacy.delta = 1e-5
  # None: calibrate sigma so that training ends exactly within target_epsilon.
  # A number: use it if the planned steps stay within target_epsilon; a plan that would
  # pass the target is refused before training (nothing is trained).
  config.privacy.noise_multiplier = ml_collections.FieldReference(None, field_type=float)
  config.privacy.clipping_norm = 1.0
  config.privacy.accountant = 'rdp'   # rdp | pld
  config.privacy.sampling = 'poisson'  # poisson | fixed
  # 'dpsgd': independent Gaussian noise at every step. 'bandmf': banded matrix
  # factorisation (privacy/bandmf.py): noise correlated over num_bands = b steps,
  # cyclic Poisson sampling over b groups (each example takes part at most once in any
  # b steps); b = 1 is DP-SGD exactly. b must divide the number of steps and be at most
  # N / batch_size; needs sampling='poisson'.
  config.privacy.mechanism = 'dpsgd'
  config.privacy.num_bands = 1
  # Turns DP off (no noise, no budget). Every report of such a run says non-private.
  config.privacy.allow_non_private = False
  # TESTING ONLY. The noise and the batch selection come from a secret drawn from the
  # OS's entropy and kept in WORKDIR/mechanism_secret.json (never published). True
  # derives them from `seed` instead, so that runs are reproducible: anyone holding the
  # config can then regenerate the noise and the batches, and the guarantee does not
  # hold once the config is published. Every report of such a run says so first.
  config.privacy.insecure_seeded_noise = False
  # Fine-tuning from parameters that descend (through any chain of fine-tuning runs of
  # this platform) from a DP run on the SAME data composes this run with every such
  # ancestor; such a model.pretrained_path is refused unless this is True, and then
  # privacy.json/.md report the total (basic composition: epsilons and deltas add).
  config.privacy.compose_with_pretrained_run = False
  # delta >= 1/N permits releasing a few examples outright and is refused; True runs it
  # anyway and the privacy report says so in its first lines.
  config.privacy.allow_large_delta = False

  # ---------------------------------------------------------------- training
  config.training = ml_collections.ConfigDict()
  config.training.batch_size = 256    # expected logical batch size (public)
  # Examples per device per forward/backward pass; 0 = the whole per-device batch.
  config.training.micro_batch_size = 0
  # Per-example gradients: 'fast' (each layer's per-example gradient from its
  # activations and output gradients; 2x faster than vmap for WRN-16-4 on CPU,
  # results/benchmarks.md), 'ghost' (the same without keeping them: less memory,
  # more compute), 'vmap' (vmap of grad: the reference the tests compare against).
  # All give the same clipped sum to float tolerance (tests/privacy/clipped_sums/).
  # The one default: the trainer and the benchmark read it from here.
  config.training.per_example_grads = 'fast'
  # Mixed precision: 'bfloat16' runs convolutions and activations in bfloat16, while
  # parameters, optimizer state, EMA, per-example norms, clip factors, the clipped
  # sum and the noise stay float32 (each example's clipped contribution is formed and
  # measured in float32, so the sensitivity is still C). 'float32': everything float32.
  config.training.compute_dtype = 'float32'
  config.training.num_steps = 0       # exactly one of num_steps / num_epochs > 0
  config.training.num_epochs = 0.0
  config.training.optimizer = ml_collections.ConfigDict()
  config.training.optimizer.name = 'sgd'  # sgd | adam
  config.training.optimizer.learning_rate = 1.0
  config.training.optimizer.momentum = 0.0
  config.training.optimizer.nesterov = False
  config.training.optimizer.weight_decay = 0.0
  config.training.lr_schedule = ml_collections.ConfigDict()
  config.training.lr_schedule.name = 'constant'  # constant | cosine | linear
  config.training.lr_schedule.warmup_steps = 0
  config.training.ema = ml_collections.ConfigDict()
  # 0 disables EMA; e.g. 0.999. Warmed up as min(decay, (1 + t) / (10 + t)), t counted
  # from start_step, so the average does not hold on to the initialisation.
  config.training.ema.decay = 0.0
  config.training.ema.start_step = 0
  config.training.log_every_steps = 10
  config.training.eval_every_steps = 0  # 0: evaluate only at the end
  config.training.eval_batch_size = 1000
  config.training.checkpoint_every_steps = 0  # 0: none besides the others
  # Also checkpoint every this many minutes of wall time (0: never by time), so that
  # a killed run loses at most this much work. Ctrl-C / SIGTERM always checkpoint.
  config.training.checkpoint_every_minutes = 10.0
  # With a validation split (data.validation_fraction > 0) and evaluations
  # (eval_every_steps > 0): export the parameters of the evaluation with the best
  # validation accuracy instead of the last (training/selection.py). Free for the
  # training data (post-processing); the validation accuracy is computed without noise.
  config.training.select_on_validation = False

  # ---------------------------------------------------------------- audit
  config.audit = ml_collections.ConfigDict()
  config.audit.enabled = False
  config.audit.num_canaries = 1000
  config.audit.confidence = 0.95
  config.audit.canary_type = 'mislabeled'  # mislabeled (mode 'input')
  # 'input': mislabelled training images scored on the final model (black-box);
  # 'gradient': Dirac gradient canaries that go through the real step, scored from
  # every step's privatized update (white-box). docs/audit.md.
  config.audit.mode = 'input'         # input | gradient
  # Mode 'gradient' only. analysis: 'fdp' (f-DP one-run test against the run's own
  # accountant curve), 'fdp_gaussian' (the same against Gaussian-DP curves, jax-privacy),
  # 'one_run' (Steinke et al., any (epsilon, delta)-DP mechanism). score: 'llr'
  # (per-step likelihood ratio), 'sum' (sum over steps), 'last_iterate'.
  config.audit.analysis = 'fdp'       # fdp | fdp_gaussian | one_run
  config.audit.score = 'llr'          # llr | sum | last_iterate
  config.audit.num_guesses = 0        # 0: chosen before training from public numbers
  config.audit.canary_parameter = ''  # '': the largest trainable parameter, or 'head/kernel'

  # ---------------------------------------------------------------- tracking
  config.wandb = ml_collections.ConfigDict()
  # Off unless asked: --config.wandb.mode=offline writes the run under WORKDIR/wandb
  # (upload later with `wandb sync`), online streams it. Every figure is in the run
  # files either way.
  config.wandb.mode = 'disabled'      # disabled | offline | online
  config.wandb.project = 'dp-image-classification'
  config.wandb.entity = ''
  return config
