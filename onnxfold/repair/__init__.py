"""Repairs of the activation statistics that merging channels collapses: the closed-form
Fold-AR (``ar``), data repair from calibration samples (``data``), and inputs synthesised from
BatchNorm statistics (``dir``, DeepInversion, through a differentiable torch executor).
"""
