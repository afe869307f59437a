"""Reference architectures, exporters and bundled models, importable as ``onnxfold.models``."""
