"""torch -> ONNX: load a model, compress its embedding, write and verify one decoder file."""
