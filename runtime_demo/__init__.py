"""Run an exported folder with onnxruntime, numpy and tokenizers only (never torch)."""
