"""Take the outlier channels of a norm's output out of the int8 activation blocks, exactly.

At accuracy_level 4 MatMulNBits rounds its input x to int8 per block of 32 along K, with the
step max|x_b| / 127. A few channels of the RMSNorm outputs that feed q/k/v and gate/up carry
far more energy than the rest (the model's massive activations, times the norm weight): in
their block the step is set by the outlier, and the other 31 values are rounded coarsely.
On SmolLM2-135M the int8 error of the q/k/v inputs drops 2-3x when those channels are left
out (docs/device.md), the o_proj and down_proj inputs do not change.

The exact construction, per norm output x with outlier channels O (scale 2^-k_c each):

    x'  = norm(h) * gamma'          gamma'_c = gamma_c * 2^-k_c for c in O, else gamma_c
    y   = MatMulNBits(x'; W) + [blocksum(x'), x'_O] @ [minima ; (2^k_c - 1) w_c for c in O]
        = sum_c w_c x'_c + sum_{c in O} (2^k_c - 1) w_c x'_c = sum_c w_c x_c

so the existing minima correction (export/packed/weights.py) only grows by |O| rows: the block
indicator E gains |O| selector columns, the minima |O| rows of the decoded weight (computed at
load by a Concat over initializers). No node is added to a decode step. Scaling by a power of
two is exact in float32, so the function is the same (the export's exact-grid check verifies
it); at level 4 the outlier's block is rounded with a step 2^k_c finer.

Rule for O (no text needed): run the graph on CALIB_TOKENS seeded random token ids, take each
channel's mean square over the tokens relative to the mean over channels, e_c; O = the channels
with e_c >= ENERGY_RATIO (channel rms at least 4x the input's), at most MAX_CHANNELS, largest
first; k_c = ceil(log2(sqrt(e_c))) brings the channel back to the input's rms. Random ids find
the same dominant channels as wikitext-2 text on SmolLM2 (the massive activations are a
property of the weights).
"""

from __future__ import annotations

import math
from collections import defaultdict

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from tensorgpt.export.packed.weights import BLOCK, nbits_to_codes
from tensorgpt.export.packed.zero_points import zero_point_of
from tensorgpt.export.verify import empty_past, step_feeds

CALIB_TOKENS = 256
ENERGY_RATIO = 16.0
MAX_CHANNELS = 8
_NORMS = {"SimplifiedLayerNormalization": 1, "SkipSimplifiedLayerNormalization": 2}  # gamma


# onnxruntime takes the graph as one protobuf (2 GB limit) for the channel statistics
MAX_GRAPH_BYTES = 1_500_000_000


def split_outliers(model: onnx.ModelProto, shape, log) -> dict:
    """Both passes on the assembled packed graph; returns the manifest's record."""
    if model.ByteSize() > MAX_GRAPH_BYTES:
        log("outlier channels: graph over 1.5 GB in memory, not split")
        return {"norms": 0, "channels": 0, "head_channels": 0, "skipped": "graph too large"}
    record = split_outlier_channels(model, shape)
    record["head_channels"] = split_head_outliers(model, shape)
    log(
        f"outlier channels: {record['channels']} of {record['norms']} norm outputs, "
        f"{record['head_channels']} of the head's input, out of the int8 blocks"
    )
    return record


def split_outlier_channels(model: onnx.ModelProto, shape) -> dict:
    """Rewrite `model` (the assembled packed graph, input_ids -> logits) in place; returns
    {"norms": how many norm outputs were split, "channels": total channels moved}."""
    sites = _sites(model)
    if not sites:
        return {"norms": 0, "channels": 0}
    energy = _channel_energy(model, shape, [s.x for s in sites])
    inits = {t.name: t for t in model.graph.initializer}
    new_inits: list[onnx.TensorProto] = []
    before: dict[int, list[onnx.NodeProto]] = defaultdict(list)  # load-time nodes per reader
    moved = norms = 0
    for site, e in zip(sites, energy):
        channels = choose_channels(e)
        if not channels:
            continue
        norms += 1
        moved += len(channels)
        shifts = np.array([math.ceil(0.5 * math.log2(e[c])) for c in channels])
        tag = f"outliers/{site.x}"
        gamma = numpy_helper.to_array(inits[site.norm.input[site.gamma_index]]).copy()
        gamma[channels] = gamma[channels] * np.exp2(-shifts).astype(gamma.dtype)
        k = int(numpy_helper.to_array(inits[site.blocksum.input[1]]).shape[0])
        consts = {
            f"{tag}.gamma": gamma,
            f"{tag}.channels": np.asarray(channels, np.int64),
            f"{tag}.blocks": np.asarray(channels, np.int64) // BLOCK,
            f"{tag}.depth": np.asarray(k, np.int64),
            f"{tag}.onehot": np.asarray([0, 1], np.float32),
            f"{tag}.coef": (np.exp2(shifts) - 1.0).astype(np.float32)[:, None],
        }
        site.norm.input[site.gamma_index] = f"{tag}.gamma"
        one = helper.make_node
        # E' = [E, one-hot columns of O] (K, K/32 + |O|), built at load from |O| indices
        before[id(site.blocksum)] += [
            one("OneHot", [f"{tag}.channels", f"{tag}.depth", f"{tag}.onehot"], [f"{tag}/oh"]),
            one("Transpose", [f"{tag}/oh"], [f"{tag}/select"], perm=[1, 0]),
            one("Concat", [site.blocksum.input[1], f"{tag}/select"], [f"{tag}/E"], axis=1),
        ]
        site.blocksum.input[1] = f"{tag}/E"
        for i, (mnb, correction) in enumerate(site.units):
            u = f"{tag}/{i}"
            consts[f"{u}.codes"] = _code_rows(inits, mnb, channels)  # (|O|, N) uint8
            zero = zero_point_of(mnb)
            consts[f"{u}.zero"] = np.asarray(zero, np.float32)
            minima = correction.input[1]
            # rows (2^k - 1) w_c = (2^k - 1) (d (q - z) + minima[block]): the same Q4_1 values
            before[id(correction)] += [
                one("Cast", [f"{u}.codes"], [f"{u}/q"], to=TensorProto.FLOAT),
                one("Sub", [f"{u}/q", f"{u}.zero"], [f"{u}/qc"]),
                one("Gather", [mnb.input[2], f"{tag}.blocks"], [f"{u}/d_nb"], axis=1),
                one("Transpose", [f"{u}/d_nb"], [f"{u}/d"], perm=[1, 0]),
                one("Mul", [f"{u}/qc", f"{u}/d"], [f"{u}/dq"]),
                one("Gather", [minima, f"{tag}.blocks"], [f"{u}/m"], axis=0),
                one("Add", [f"{u}/dq", f"{u}/m"], [f"{u}/w"]),
                one("Mul", [f"{u}/w", f"{tag}.coef"], [f"{u}/rows"]),
                one("Concat", [minima, f"{u}/rows"], [f"{u}/minima"], axis=0),
            ]
            correction.input[1] = f"{u}/minima"
        new_inits += [numpy_helper.from_array(v, name) for name, v in consts.items()]
    if not norms:
        return {"norms": 0, "channels": 0}
    model.graph.initializer.extend(new_inits)
    nodes = []
    for node in model.graph.node:
        nodes.extend(before.get(id(node), []))
        nodes.append(node)
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    read = {i for n in model.graph.node for i in n.input}
    keep = [t for t in model.graph.initializer if t.name in read]
    del model.graph.initializer[:]
    model.graph.initializer.extend(keep)
    return {"norms": norms, "channels": moved}


def split_head_outliers(model: onnx.ModelProto, shape) -> int:
    """The same for the 8-bit head (zero point 128) reading a norm's output h, whose other
    readers (a tied table's logit gain) must see h unchanged, so the scale is a Mul on the
    head's input and the exact part a Gather of h (four nodes per step, once):

        logits = MatMulNBits(h * s; T) + h_O @ ((1 - 2^-k_c) T_c^T for c in O)

    with s_c = 2^-k_c on O, else 1, and T_c the table's column c decoded at load from the
    codes and scales the head reads. Returns how many channels were moved."""
    graph = model.graph
    producer = {o: n for n in graph.node for o in n.output}
    heads = [
        n
        for n in graph.node
        if n.op_type == "MatMulNBits"
        and _attr(n, "bits") == 8
        and n.input[0] in producer
        and producer[n.input[0]].op_type in _NORMS
        and (len(n.input) < 4 or not n.input[3])
    ]
    if len(heads) != 1:
        return 0
    head = heads[0]
    hidden = head.input[0]
    (energy,) = _channel_energy(model, shape, [hidden])
    channels = choose_channels(energy)
    if not channels:
        return 0
    shifts = np.array([math.ceil(0.5 * math.log2(energy[c])) for c in channels])
    dim = int(_attr(head, "K"))
    scale = np.ones(dim, np.float32)
    scale[channels] = np.exp2(-shifts)
    t = "outliers/head"
    consts = {
        f"{t}.scale": scale,
        f"{t}.channels": np.asarray(channels, np.int64),
        f"{t}.blocks": np.asarray(channels, np.int64) // BLOCK,
        f"{t}.flat": np.asarray([0, -1], np.int64),
        f"{t}.offset": np.array(128, np.float32),
        f"{t}.coef": (1.0 - np.exp2(-shifts)).astype(np.float32)[:, None],
    }
    graph.initializer.extend(numpy_helper.from_array(v, k) for k, v in consts.items())
    one = helper.make_node
    out = head.output[0]
    load_time = [  # T_O^T (|O|, V) from the head's codes (V, K/32, 32) and scales (V, K/32)
        one("Reshape", [head.input[1], f"{t}.flat"], [f"{t}/codes2d"]),
        one("Gather", [f"{t}/codes2d", f"{t}.channels"], [f"{t}/qcols"], axis=1),
        one("Cast", [f"{t}/qcols"], [f"{t}/qf"], to=TensorProto.FLOAT),
        one("Sub", [f"{t}/qf", f"{t}.offset"], [f"{t}/qc"]),
        one("Gather", [head.input[2], f"{t}.blocks"], [f"{t}/dcols"], axis=1),
        one("Mul", [f"{t}/qc", f"{t}/dcols"], [f"{t}/cols"]),
        one("Transpose", [f"{t}/cols"], [f"{t}/rows"], perm=[1, 0]),
        one("Mul", [f"{t}/rows", f"{t}.coef"], [f"{t}/exact"]),
    ]
    per_step = [
        one("Mul", [hidden, f"{t}.scale"], [f"{t}/scaled"]),
        one("Gather", [hidden, f"{t}.channels"], [f"{t}/h_O"], axis=-1),
        one("MatMul", [f"{t}/h_O", f"{t}/exact"], [f"{t}/part"]),
    ]
    head.input[0] = f"{t}/scaled"
    head.output[0] = f"{t}/main"
    total = one("Add", [f"{t}/main", f"{t}/part"], [out])
    nodes = list(graph.node)
    at = nodes.index(head)
    first_load = max(
        (nodes.index(producer[i]) for i in head.input[1:3] if i in producer), default=-1
    )
    nodes[at + 1 : at + 1] = [total]
    nodes[at:at] = per_step
    nodes[first_load + 1 : first_load + 1] = load_time
    del graph.node[:]
    graph.node.extend(nodes)
    return len(channels)


def choose_channels(energy: np.ndarray) -> list[int]:
    """The rule above: channels with relative mean square >= ENERGY_RATIO, largest first, at
    most MAX_CHANNELS; returned sorted."""
    ratio = energy / max(float(energy.mean()), 1e-30)
    order = np.argsort(-ratio, kind="stable")[:MAX_CHANNELS]
    return sorted(int(c) for c in order if ratio[c] >= ENERGY_RATIO)


class _Site:
    def __init__(self, norm, gamma_index, x, blocksum, units):
        self.norm, self.gamma_index, self.x = norm, gamma_index, x
        self.blocksum, self.units = blocksum, units


def _sites(model: onnx.ModelProto) -> list[_Site]:
    """Norm outputs read only by one block-sum MatMul and 4-bit MatMulNBits units whose
    corrections read that block sum."""
    graph = model.graph
    inits = {t.name for t in graph.initializer}
    consumers: dict[str, list[onnx.NodeProto]] = defaultdict(list)
    for node in graph.node:
        for name in node.input:
            consumers[name].append(node)
    found = []
    for norm in graph.node:
        gamma_index = _NORMS.get(norm.op_type)
        if gamma_index is None or len(norm.input) <= gamma_index:
            continue
        if norm.input[gamma_index] not in inits:
            continue
        x = norm.output[0]
        users = consumers.get(x, [])
        sums = [n for n in users if n.op_type == "MatMul"]
        mnbs = [n for n in users if n.op_type == "MatMulNBits"]
        if len(sums) != 1 or not mnbs or len(sums) + len(mnbs) != len(users):
            continue
        if sums[0].input[0] != x or sums[0].input[1] not in inits:
            continue
        if any(_attr(n, "bits") != 4 or n.input[0] != x for n in mnbs):
            continue
        corrections = consumers.get(sums[0].output[0], [])
        units = []
        for mnb in mnbs:
            adds = consumers.get(mnb.output[0], [])
            if len(adds) != 1 or adds[0].op_type != "Add":
                break
            corr = next((c for c in corrections if c.output[0] in adds[0].input), None)
            if corr is None or corr.op_type != "MatMul" or corr.input[0] != sums[0].output[0]:
                break
            units.append((mnb, corr))
        else:
            if len(units) == len(corrections):
                found.append(_Site(norm, gamma_index, x, sums[0], units))
    return found


def _attr(node: onnx.NodeProto, name: str, default: int = 4) -> int:
    return next((a.i for a in node.attribute if a.name == name), default)


def _channel_energy(model: onnx.ModelProto, shape, names: list[str]) -> list[np.ndarray]:
    """Mean square of every channel of `names` over CALIB_TOKENS seeded random token ids."""
    import onnxruntime as ort

    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    del probe.graph.output[:]
    for node in probe.graph.node:  # fp32 activations: the same statistics on every CPU
        for a in node.attribute:
            if node.op_type == "MatMulNBits" and a.name == "accuracy_level":
                a.i = 1
    for name in names:
        probe.graph.output.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, None))
    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(
        probe.SerializeToString(), options, providers=["CPUExecutionProvider"]
    )
    del probe
    tokens = min(CALIB_TOKENS, shape.max_position_embeddings)
    ids = np.random.default_rng(0).integers(0, shape.vocab_size, (1, tokens), dtype=np.int64)
    feeds = step_feeds(ids, 0, empty_past(shape))
    wanted = {i.name for i in session.get_inputs()}
    outputs = session.run(names, {k: v for k, v in feeds.items() if k in wanted})
    return [(o.reshape(-1, o.shape[-1]).astype(np.float64) ** 2).mean(axis=0) for o in outputs]


def _code_rows(inits, mnb: onnx.NodeProto, channels: list[int]) -> np.ndarray:
    """Rows `channels` of the unit's 4-bit codes, unpacked: (|O|, N) uint8."""
    zero_points = mnb.input[3] if len(mnb.input) > 3 else ""
    if zero_point_of(mnb) == 0 and numpy_helper.to_array(inits[zero_points]).any():
        raise ValueError(f"{mnb.name}: the outlier split needs zero points 0 or the centered 8")
    codes = nbits_to_codes(numpy_helper.to_array(inits[mnb.input[1]]))  # (K, N)
    return np.ascontiguousarray(codes[channels])
