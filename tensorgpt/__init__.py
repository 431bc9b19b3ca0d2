"""tensorgpt: Tensor-Train compression of a causal LM's token embedding, ONNX export, onnxruntime demo."""

__version__ = "0.1.0"
