"""Static int8 quantization of the encoder with onnxruntime's tools.

QDQ format, unsigned activations with reduce_range (U8S8): on AVX2 CPUs
without VNNI, signed activations (S8S8) measured 2-3x slower than fp32 on
MobileNetV3 while U8S8 with reduce_range did not. Weights per channel.
Calibration inputs come from the runtime's own preprocessing.
"""

from __future__ import annotations

import logging
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np
from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType,
                                      quantize_static)
from onnxruntime.quantization.shape_inference import quant_pre_process

from edge_search.errors import ExportError

from .onnx_export import INPUT


@dataclass(frozen=True)
class QuantSettings:
    format: str = "QDQ"
    activations: str = "QUInt8"
    weights: str = "QInt8"
    per_channel: bool = True
    reduce_range: bool = True
    calibration: str = "MinMax"  # or "Entropy"; "Percentile" failed inside onnxruntime 1.23 on our batches
    percentile: float = 99.999  # with calibration="Percentile"
    # Only the heavy ops: quantizing the final normalization (ReduceL2, Div)
    # costs accuracy and buys no speed.
    op_types: tuple[str, ...] = ("Conv", "Gemm", "MatMul")
    # Layers kept in float: "stem" (the first Conv, which sees raw pixels) and
    # "head" (the last Gemm/MatMul, the projection into the teacher's space).
    keep_float: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.calibration not in ("MinMax", "Percentile", "Entropy"):
            raise ExportError(f"unknown int8 calibration method {self.calibration!r}")
        if not set(self.keep_float) <= {"stem", "head"}:
            raise ExportError(f"keep_float names unknown layers: {sorted(set(self.keep_float) - {'stem', 'head'})}")


# Tried in order by the export until one passes the int8 fidelity gates
# (see pipeline): the plain recipe is the smallest and, on MobileNetV3, no
# slower; the others trade a little size for agreement with fp32.
RECIPES: tuple[QuantSettings, ...] = (
    QuantSettings(),
    QuantSettings(keep_float=("stem", "head")),
)


class _Reader(CalibrationDataReader):
    def __init__(self, batch: np.ndarray, step: int = 8):
        self.batches = [batch[i:i + step] for i in range(0, len(batch), step)]
        self.pos = 0

    def get_next(self):
        if self.pos >= len(self.batches):
            return None
        self.pos += 1
        return {INPUT: self.batches[self.pos - 1]}

    def rewind(self):
        self.pos = 0


def _float_nodes(model_path: Path, roles: tuple[str, ...], op_types: tuple[str, ...]) -> list[str]:
    if not roles:
        return []
    import onnx  # export stage only

    nodes = [n for n in onnx.load(str(model_path), load_external_data=False).graph.node if n.op_type in op_types]
    picked = []
    if "stem" in roles:
        picked += [n.name for n in nodes if n.op_type == "Conv"][:1]
    if "head" in roles:
        picked += [n.name for n in nodes if n.op_type in ("Gemm", "MatMul")][-1:]
    return picked


def quantize_int8(fp32: Path, out: Path, calibration: np.ndarray, settings: QuantSettings = QuantSettings()) -> dict:
    if len(calibration) == 0:
        raise ExportError("int8 calibration needs at least one catalog image")
    logging.getLogger("root").setLevel(logging.ERROR)  # the quantizer logs every node at INFO
    with tempfile.TemporaryDirectory() as tmp:
        pre = Path(tmp) / "pre.onnx"
        try:
            quant_pre_process(str(fp32), str(pre), skip_symbolic_shape=True)
        except Exception:
            pre = fp32  # pre-processing is an optimisation; quantize the plain graph instead
        try:
            quantize_static(
                str(pre), str(out), _Reader(np.ascontiguousarray(calibration, dtype=np.float32)),
                quant_format=QuantFormat.QDQ, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                per_channel=settings.per_channel, reduce_range=settings.reduce_range,
                calibrate_method=getattr(CalibrationMethod, settings.calibration),
                op_types_to_quantize=list(settings.op_types),
                nodes_to_exclude=_float_nodes(pre, settings.keep_float, settings.op_types),
                extra_options={"CalibPercentile": settings.percentile},
            )
        except Exception as e:
            raise ExportError(f"int8 quantization failed ({type(e).__name__}: {str(e)[:200]})") from None
    return {**asdict(settings), "op_types": list(settings.op_types), "keep_float": list(settings.keep_float),
            "calibration_images": int(len(calibration))}


def quantize_until(fp32: Path, out: Path, calibration: np.ndarray, measure: Callable[[Path], dict],
                   passes: Callable[[dict], bool], recipes: tuple[QuantSettings, ...] = RECIPES
                   ) -> tuple[dict, list[dict]]:
    """Quantize with each recipe in turn until `passes(measure(out))`: the model at `out` is
    the last recipe tried. -> (its settings, every attempt's recipe and figures)."""
    attempts = []
    for recipe in recipes:
        info = quantize_int8(fp32, out, calibration, recipe)
        figures = measure(out)
        attempts.append({"recipe": {k: info[k] for k in ("calibration", "keep_float")}, **figures})
        if passes(figures):
            break
    return info, attempts
