"""The channel rules of the built-in ops, one module per op family; importing this package registers
them (and their MAC, attribute-fix and weight-layout hooks) in :mod:`onnxfold.analysis.registry`.

Rules, by kind:

* producer (:mod:`.producers`, :mod:`.conv_groups`): Conv/ConvTranspose (any group but a depthwise one's), Gemm, MatMul
  with a constant 2-D weight open a space on the output channel axis; weight rows and bias are ``average``
  members, the input's channels join the weight's input axis as ``sum`` members (a grouped Conv's as a
  split member, and both of its sides are cut into its convolution groups; a grouped ConvTranspose's
  output columns likewise).
* pass-through (:mod:`.elementwise`, :mod:`.normalization`, :mod:`.reductions`, :mod:`.layout`):
  element-wise unary ops, pooling, BatchNormalization/InstanceNormalization (their per-channel
  vectors are ``average`` members), depthwise Conv (filters averaged), reductions and softmax over
  other axes, Transpose/Squeeze/Unsqueeze, Pad/Resize/Slice/Expand on other axes; SpaceToDepth
  and DepthToSpace (:mod:`.depth_space`) trade channels for pixel blocks (tiles, united copies, units).
* join (:mod:`.elementwise`, :mod:`.joins`, :mod:`.attention`): Add/Mul/… unite their tracked inputs'
  spaces; a per-channel constant is an ``average`` member; Concat lays segments side by side, Split and
  Slice cut them (sizes and bounds become ``shape`` members); Flatten/Reshape (:mod:`.reshapes`) turn
  each channel into a block of features, lay copies of the channels side by side (the channel axis
  merged with dims before it: NHWC Flatten, stacked frames) or coarsen it to attention heads; fused
  attention unites q, k and v by heads.
* recurrent (:mod:`.recurrent`): LSTM/GRU/RNN read their input features through W's axis 2
  (``sum`` members) and open a space of their hidden units (rows of every gate block, R's columns).
* fill (:mod:`.fills`): a ConstantOfShape whose last dim is a stored entry opens a space that moves
  with whatever group it meets (a decoder's zero initial state), its entry a ``shape`` member.
* barrier: anything else, graph outputs, ops that mix or normalise over the channel axis, a grouped
  Conv(Transpose) reading several groups' channels, weights that are computed or shared
  with an untracked use (a :class:`~onnxfold.analysis.groups.BlockReason` each).
"""

from __future__ import annotations

from onnxfold.analysis.rules import (  # noqa: F401  (imported to register the rules)
    attention,
    depth_space,
    elementwise,
    fills,
    joins,
    layout,
    normalization,
    producers,
    recurrent,
    reductions,
    reshapes,
)
