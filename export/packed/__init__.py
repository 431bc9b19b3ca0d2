"""`--runtime packed`: the exported model runs compressed on the device.

weights.py            4-bit MatMulNBits for the body's linear layers (Q4_1 grid kept exactly)
fuse_projections.py   q/k/v and gate/up MatMulNBits fused into one per layer
zero_points.py        zero point 8 (centered codes), the minima correction carrying the rest
outlier_channels.py   strong channels of the norm outputs out of the int8 activation blocks
table.py              the shared 8-bit table: Gather lookup and MatMulNBits head
assemble.py           embedding + body + head into one file
fusions/              onnxruntime's fused kernels (attention, norms), one pass per file
verify.py             the parity check against PyTorch on the same 4-bit grid
"""
