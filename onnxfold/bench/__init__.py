"""Benchmarks (``onnxfold bench ...``): measurements with their tables and plots, not tests.

fold: time and memory of one fold; quality: accuracy against sparsity per method; speed: latency,
size and memory of folded and INT8 models; coverage: how much of public architectures folds;
minilm and clustering: a pretrained sentence encoder; scale: a LLaMA-7B-shaped model.
"""
