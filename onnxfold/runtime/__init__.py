"""Running models in onnxruntime: sessions and providers (``session``), model inputs and the one
loader of input files (``inputs``), output comparison and ``validate`` (``compare``), activation
statistics for data repair (``activations``) and an onnxruntime/OpenVINO cross-check (``crosscheck``)."""
