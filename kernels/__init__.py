"""Numeric kernels of autolr: batched curve fits, robust smoothing, GP kernels.

Installed as ``autolr.kernels``. Device-agnostic torch; every function takes a
batch of series and works on whatever device its inputs live on.
"""
