"""Tensor-Train math for embedding tables: decompositions, metrics, storage (numpy + TensorLy)."""
