"""Clipped sums of per-example gradients, the part of DP-SGD that bounds sensitivity.

``get(name)`` returns an implementation with the one contract of registry.py;
``names()`` lists them: 'vmap' (the reference), 'fast' and 'ghost' (from the layers'
activations and output gradients, with per-layer rules in layer_rules.py). Importing
this package registers all three.
"""
# pylint: disable=unused-import,g-bad-import-order
# Registration order is the order of names(): the reference first.
from image_classification.privacy.clipped_sums import vmap
from image_classification.privacy.clipped_sums import fast
from image_classification.privacy.clipped_sums import ghost
from image_classification.privacy.clipped_sums.registry import get
from image_classification.privacy.clipped_sums.registry import names
from image_classification.privacy.clipped_sums.registry import register
