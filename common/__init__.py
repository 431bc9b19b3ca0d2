"""The bottom layer: what export, runtime and orchestration must agree on (stdlib only,
except `ort_load`, which needs onnxruntime): the exported folder's contract, file helpers,
the subcommand record. Nothing here imports another tensorgpt package."""
