"""The DP core: batch selection, clipped sums, noise (privatizers), accounting.

Importing the package registers every privatizer (a module's ``@privatizers.register``
runs when it is imported): one import line per noise mechanism.
"""
from image_classification.privacy import bandmf  # registers 'bandmf'
from image_classification.privacy import privatizers  # registers 'dpsgd'
