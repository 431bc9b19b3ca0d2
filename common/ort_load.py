"""Open an exported folder's graphs in onnxruntime: the loader that the runtime uses and that
the export's split-load check runs, so the check covers exactly what `tensorgpt run` does.

Needs onnxruntime and numpy (the runtime's dependencies), nothing from tensorgpt above.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort


def session_options(threads: int | None) -> ort.SessionOptions:
    """Options for a latency-oriented single-model session.

    ENABLE_ALL is kept on purpose: it constant-folds initializer-only subgraphs at load, which
    is how a TT-compressed tied head gets rebuilt once instead of on every forward.
    """
    if threads is not None and threads < 0:
        raise ValueError(f"--threads must be >= 0 (0 = onnxruntime's default), got {threads}")
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = threads or 0
    # A decoder is one chain of ops: parallel branches would only add scheduling threads.
    options.inter_op_num_threads = 1
    options.log_severity_level = 3  # warnings about unused initializers are noise to users
    return options


def release_freed_memory() -> None:
    """Hand heap memory that session creation freed back to the OS (glibc only).

    onnxruntime folds initializer-only subgraphs at load (a compressed table's tied head, 4-bit
    weights): the intermediates are freed, but glibc keeps the pages, so a q4 file's session
    held 2.4 GB instead of 0.7 GB until malloc_trim. A no-op where there is no glibc.
    """
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
        if libc is not None and hasattr(libc, "malloc_trim"):
            libc.malloc_trim(0)
    except OSError:
        pass


# madvise(2) advice: drop these pages from this process (they stay in the page cache).
_MADV_DONTNEED = 4


def _clean_file_mappings(root: str) -> list[tuple[int, int]]:
    """(address, bytes) of this process's mappings of files under `root` that hold no private
    (copy-on-write) page: smaps' `Anonymous: 0 kB`, so dropping their pages loses nothing."""
    spans, current = [], None
    with open("/proc/self/smaps", encoding="utf-8") as smaps:
        for line in smaps:
            fields = line.split(maxsplit=5)
            if "-" in fields[0] and len(fields) >= 5 and ":" not in fields[0]:
                low, high = (int(x, 16) for x in fields[0].split("-"))
                path = fields[5].rstrip("\n") if len(fields) == 6 else ""
                current = (low, high - low) if path.startswith(root) else None
            elif current is not None and fields[0] == "Anonymous:":
                if fields[1] == "0":
                    spans.append(current)
                current = None
    return spans


def release_file_pages(folder: Path) -> int:
    """Drop from this process the pages of the folder's files that onnxruntime memory-mapped
    and read once (Linux only; returns the bytes of mappings released, 0 elsewhere).

    Why: onnxruntime maps external data (the split load's body reads model.onnx so) and a
    kernel that prepacks a weight reads every page of it once. Where the weight has another
    reader the mapping stays: the packed file's 8-bit tied table is prepacked by the head's
    MatMulNBits *and* read row by row by the lookup, so all of it stayed resident next to the
    head's packed copy (GPT-2 real shape: 36.8 MiB of the session's 164, docs/device.md). The
    lookup needs only the rows of the tokens it meets. MADV_DONTNEED on a file mapping no page
    of which was ever written (checked in smaps) loses nothing: the pages stay in the page
    cache, and a row read later faults back in from there (or from the file) unchanged.
    """
    import ctypes
    import ctypes.util
    import sys

    if not sys.platform.startswith("linux"):
        return 0
    try:
        spans = _clean_file_mappings(str(folder.resolve()) + "/")
        libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    except OSError:
        return 0
    libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    return sum(size for low, size in spans if libc.madvise(low, size, _MADV_DONTNEED) == 0)


def open_split_session(
    decode: Path, body: Path, options: ort.SessionOptions, threads: int | None
) -> ort.InferenceSession:
    """Run the weight-decode graph once, then open the body with its outputs as initializers.

    Why: folding the decode subgraph inside model.onnx keeps every folded tensor until the
    pass ends (2.7 GB peak for a 75 MB SmolLM2 file); running it as a plain graph frees each
    intermediate after its last use (1.45 GB), and the body session is the same graph with
    the same optimizations, so the logits are the same. onnxruntime copies the supplied
    tensors into the graph (documented for AddExternalInitializers), so they can go afterwards.
    """
    names, values = decode_weights(decode, threads)
    options.add_external_initializers(names, [ort.OrtValue.ortvalue_from_numpy(v) for v in values])
    return ort.InferenceSession(str(body), sess_options=options, providers=["CPUExecutionProvider"])


def decode_weights(decode: Path, threads: int | None) -> tuple[list[str], list[np.ndarray]]:
    """Run decode.onnx (no inputs) as a plain graph: optimizations off, so nothing is folded
    and each intermediate is freed after its last use. Returns its output names and values.

    When onnxruntime knows every output's dtype and shape (it infers them for a decode graph:
    no inputs, so no symbolic dimensions), the outputs are written into arrays allocated here.
    Why: the arrays `run` returns live in the decode session's memory arena and keep it
    alive, with every freed intermediate in it, while the body session is built: 68 MiB more
    at the load peak of SmolLM2's packed tc table (docs/device.md)."""
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.intra_op_num_threads = threads or 0
    options.log_severity_level = 3
    decoder = ort.InferenceSession(str(decode), options, providers=["CPUExecutionProvider"])
    outputs = decoder.get_outputs()
    names = [output.name for output in outputs]
    shapes = [output.shape for output in outputs]
    dtypes = [_NUMPY_TYPES.get(output.type) for output in outputs]
    if any(t is None for t in dtypes) or not all(
        isinstance(shape, list) and all(isinstance(d, int) for d in shape) for shape in shapes
    ):
        return names, decoder.run(names, {})
    values = [np.empty(shape, dtype) for shape, dtype in zip(shapes, dtypes, strict=True)]
    binding = decoder.io_binding()
    for name, value in zip(names, values, strict=True):
        binding.bind_output(name, "cpu", 0, value.dtype, list(value.shape), value.ctypes.data)
    decoder.run_with_iobinding(binding)
    return names, values


# onnxruntime's type strings of the tensors a decode graph hands over
_NUMPY_TYPES = {
    "tensor(float)": np.float32,
    "tensor(float16)": np.float16,
    "tensor(uint8)": np.uint8,
    "tensor(int8)": np.int8,
    "tensor(int32)": np.int32,
    "tensor(int64)": np.int64,
}
