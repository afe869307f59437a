"""Passes as data: the pass options (``options``) and the contract and manager that run a pipeline
of passes (``manager``). The passes themselves are in :mod:`onnxfold.passes`."""
