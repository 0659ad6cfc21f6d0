"""The shipped image model's numeric form, chosen by timing it on the export machine.

Two candidates beside plain fp32:
  * `int8`: static QDQ quantization (quantize.py): the smallest file, but on
    MobileNetV3 hard-swish and squeeze-excite stay float between the
    quantize pairs, and it measured 2x slower than fp32 on AVX2 and on
    AVX-512 VNNI CPUs alike (docs/benchmarks/README.md, bench/encoders.py).
  * `fp16`: the fp32 graph with its large weights stored as float16, each
    behind a Cast to float32. onnxruntime folds those casts into float32
    weights when it builds the session, so the model computes exactly as the
    fp32 graph with rounded weights, at fp32 speed, from half the file.
`auto` makes both, gates both against fp32, times both at batch 1 on the
export's thread count, each alone in its own process (timing.py), and ships
the fastest that passes its gates within the size budget (a ViT tower's int8
wins on VNNI; a MobileNet student's fp16 wins).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edge_search.errors import ExportError

from .timing import time_alone

BUDGET_BYTES = 5_000_000  # the device model's size target: a candidate above it ships only if all are
# Float weights smaller than this stay float32: biases and scales are a rounding error of the
# file and some (Resize scales, Clip bounds) are read by shape logic, not arithmetic.
FP16_MIN_ELEMENTS = 1024
FP16_MAX = 65504.0


def store_fp16(fp32: Path, out: Path) -> dict:
    """Write `fp32`'s graph to `out` with its large float weights stored as float16 behind Casts."""
    import onnx  # export stage only
    from onnx import TensorProto, helper, numpy_helper

    model = onnx.load(str(fp32))
    graph = model.graph
    kept, casts, converted, too_large = [], [], 0, []
    for init in graph.initializer:
        count = int(np.prod(init.dims)) if init.dims else 1
        if init.data_type != TensorProto.FLOAT or count < FP16_MIN_ELEMENTS:
            kept.append(init)
            continue
        values = numpy_helper.to_array(init)
        if not np.isfinite(values).all() or np.abs(values).max() > FP16_MAX:
            too_large.append(init.name)  # would become inf: this tensor stays float32
            kept.append(init)
            continue
        half = numpy_helper.from_array(values.astype(np.float16), f"{init.name}.fp16")
        kept.append(half)
        casts.append(helper.make_node("Cast", [half.name], [init.name], to=TensorProto.FLOAT,
                                      name=f"{init.name}.to_fp32"))
        converted += count
    if not casts:
        raise ExportError(f"{fp32}: no float weight of {FP16_MIN_ELEMENTS}+ elements to store as fp16")
    del graph.initializer[:]
    graph.initializer.extend(kept)
    nodes = list(graph.node)
    del graph.node[:]
    graph.node.extend(casts + nodes)  # topological order: the casts feed what read the weights
    try:
        onnx.checker.check_model(model)
    except Exception as e:
        raise ExportError(f"fp16 weight storage made an invalid graph ({type(e).__name__}: {str(e)[:200]})") from None
    onnx.save(model, str(out))
    return {"weights_fp16": converted, "kept_fp32": too_large, "min_elements": FP16_MIN_ELEMENTS}


def time_models(paths: dict[str, Path], size: tuple[int, int], threads: int, rounds: int = 4, calls: int = 10
                ) -> dict[str, dict]:
    """Batch-1 latency of each model file, each alone in its own process (timing.py): p50 and best, ms."""
    times = time_alone({k: (p, tuple(size)) for k, p in paths.items()}, rounds, calls, threads)
    return {k: {"ms_p50": round(float(np.median(v)), 3), "ms_best": round(float(min(v)), 3), "calls": len(v)}
            for k, v in times.items()}


# Within this share of the fastest, a smaller file wins: a difference that small is load noise.
TIE_SHARE = 0.1


def choose(figures: dict[str, dict], passes: dict[str, bool], budget_bytes: int) -> str:
    """Among the candidates that pass their gates (all, if none does) and fit the budget (all of those,
    if none does): the fastest at p50; one within TIE_SHARE of it that is smaller wins."""
    pool = [k for k in figures if passes.get(k)] or list(figures)
    fits = [k for k in pool if figures[k]["bytes"] <= budget_bytes] or pool
    fastest = min(figures[k]["ms_p50"] for k in fits)
    close = [k for k in fits if figures[k]["ms_p50"] <= fastest * (1 + TIE_SHARE)]
    return min(close, key=lambda k: (figures[k]["bytes"], figures[k]["ms_p50"], k))
