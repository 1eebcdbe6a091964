"""Model families behind a registry: see registry.build.

Importing the package registers every model family and feature extractor (each
module's ``@registry.register`` / ``@features.register`` runs when it is imported):
one import line per family.
"""
from image_classification.models import registry
from image_classification.models import cnn  # registers 'cnn', 'tanh_cnn'
from image_classification.models import feature_heads  # 'feature_linear', 'feature_cnn'
from image_classification.models import nf_resnet  # registers 'nf_resnet'
from image_classification.models import nfnet  # registers 'nfnet'
from image_classification.models import scattering  # registers the 'scattering' features
from image_classification.models import wide_resnet  # registers 'wide_resnet'
from image_classification.models.registry import available, build, register
