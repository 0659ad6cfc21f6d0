"""Loading the CLIP teacher through open_clip, and embedding images with it.

A teacher is a model name (open_clip's built-ins) or a path to a model config
JSON; its weights are a pretrained tag (downloaded where there is a network),
a local checkpoint file, or `random` when asked for explicitly.

A config may add `"test_sides": [S1, S2, ...]`: the teacher then embeds an image
at each of these sides (resized from its input side inside the graph) and
averages the unit vectors, a test-time ensemble that is better and slower than
one pass (bench/teacher_recipe.py --sides 128+160+192 measures it on dev).
Training (fine-tuning) is unaffected: it runs the tower once at its own side.
"""

from __future__ import annotations

import json
import logging
import socket
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import open_clip
import torch
from tqdm import tqdm

from edge_search.errors import ExportError, WeightsUnavailable
from edge_search.files import sha256_file
from edge_search.core.manifest import PreprocessCfg

from .licences import licence_for

log = logging.getLogger("edge_search.export")
RANDOM = "random"
# offline, the one way to try the whole pipeline: said wherever weights cannot be had
OFFLINE_RANDOM_HINT = "or --pretrained random to check the pipeline with untrained weights (not a search model)"


class MultiSide(torch.nn.Module):
    """An image tower run at several input sides -> the sum of its unit vectors (callers normalise).
    Bilinear without antialiasing: opset 17's Resize has none, and on the reference teacher's dev
    photos it scores as antialiased resizing does (bench/teacher_recipe.py)."""

    def __init__(self, tower: torch.nn.Module, sides: tuple[int, ...]):
        super().__init__()
        self.tower, self.sides = tower, tuple(sides)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        total = None
        for side in self.sides:
            x = image if image.shape[-1] == side and image.shape[-2] == side else \
                torch.nn.functional.interpolate(image, size=(side, side), mode="bilinear", align_corners=False)
            v = torch.nn.functional.normalize(self.tower(x), dim=-1)
            total = v if total is None else total + v
        return total


@dataclass
class Teacher:
    model: torch.nn.Module
    name: str
    preprocess: PreprocessCfg
    embed_dim: int
    provenance: dict[str, Any] = field(default_factory=dict)
    sides: tuple[int, ...] = ()  # the config's test_sides; () embeds once at the input side

    @property
    def visual(self) -> torch.nn.Module:
        """The image tower as trained: one pass at the input side."""
        return self.model.visual

    @property
    def image_tower(self) -> torch.nn.Module:
        """What embeds an image at inference (and what an ONNX export of the teacher holds)."""
        return MultiSide(self.visual, self.sides) if self.sides else self.visual

    @property
    def logit_scale(self) -> float:
        """The temperature the teacher was trained to score image-text pairs with (CLIP's cap of 100)."""
        scale = getattr(self.model, "logit_scale", None)
        return min(100.0, float(scale.detach().exp())) if scale is not None else 1 / 0.07

    def weights_sha256(self) -> str:
        """A hash of the image tower's weights as they are now (after any fine-tuning): the key of the
        teacher's vectors in the embedding cache, and what a --base catalog build checks it has."""
        import hashlib

        h = hashlib.sha256()
        if self.sides:  # another ensemble of the same weights gives other vectors
            h.update(f"test_sides={list(self.sides)}".encode())
        for name, tensor in sorted(self.visual.state_dict().items()):
            h.update(name.encode())
            h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
        return h.hexdigest()

    @torch.no_grad()
    def encode(self, batch: np.ndarray, batch_size: int = 64, progress: str | None = None) -> np.ndarray:
        """N x 3 x H x W (already preprocessed) -> N x D, unit length."""
        self.model.eval()
        out = []
        steps = range(0, len(batch), batch_size)
        for i in tqdm(steps, desc=progress, disable=progress is None, unit="batch", leave=False):
            x = torch.from_numpy(np.ascontiguousarray(batch[i:i + batch_size]))
            out.append(torch.nn.functional.normalize(self.image_tower(x), dim=-1).float().numpy())
        return np.concatenate(out) if out else np.zeros((0, self.embed_dim), np.float32)


def _read_config(path: Path) -> tuple[str, dict, dict, tuple[int, ...]]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as e:
        raise ExportError(f"{path}: cannot read teacher config ({e})") from None
    except json.JSONDecodeError as e:
        raise ExportError(f"{path}: teacher config is not valid JSON ({e.msg} at line {e.lineno})") from None
    if not isinstance(data, dict):
        raise ExportError(f"{path}: teacher config must be a JSON object")
    # Either open_clip's plain model config, or the hub layout {model_cfg, preprocess_cfg}.
    sides = data.get("test_sides", ())
    if not isinstance(sides, list | tuple) or not all(isinstance(x, int) and not isinstance(x, bool) and 16 <= x <= 2048
                                                      for x in sides) or len(set(sides)) != len(sides):
        raise ExportError(f"{path}: test_sides must be a list of distinct input sides (integers 16..2048)")
    model_cfg = {k: v for k, v in data.get("model_cfg", data).items() if k != "test_sides"}
    preprocess_cfg = data.get("preprocess_cfg", {})
    missing = [k for k in ("embed_dim", "vision_cfg", "text_cfg") if k not in model_cfg]
    if missing:
        raise ExportError(f"{path}: teacher config lacks {', '.join(missing)}")
    return path.stem, model_cfg, preprocess_cfg, tuple(sides)


def _register(name: str, model_cfg: dict) -> None:
    # open_clip registers configs from files; a private temp copy holds only the
    # model part so extra keys (preprocess_cfg) never reach the model constructor.
    # open_clip reads it at once and skips a missing path on later rescans, so the
    # copy is removed (each load used to leave a folder in the temp directory).
    with tempfile.TemporaryDirectory(prefix="edge-search-cfg-") as tmp:
        path = Path(tmp) / f"{name}.json"
        path.write_text(json.dumps(model_cfg), encoding="utf-8")
        open_clip.add_model_config(path)


def _online(host: str = "huggingface.co", timeout: float = 3.0) -> bool:
    try:
        socket.create_connection((host, 443), timeout=timeout).close()
        return True
    except OSError:
        return False


def _resolve_tag(name: str, tag: str, force_pp: dict) -> tuple[str, dict]:
    """A pretrained tag: open_clip downloads it when online. Offline, use the
    local Hugging Face cache if it holds the weights, else fail at once instead
    of letting the hub client retry for a minute."""
    if _online():
        return tag, force_pp
    cfg = open_clip.get_pretrained_cfg(name, tag)
    repo = (cfg.get("hf_hub") or "").strip("/")
    if repo:
        from huggingface_hub import try_to_load_from_cache

        for filename in ("open_clip_model.safetensors", "open_clip_pytorch_model.bin"):
            cached = try_to_load_from_cache(repo, filename)
            if isinstance(cached, str):
                pp_keys = ("size", "mode", "mean", "std", "interpolation", "resize_mode", "fill_color")
                return cached, {**{k: cfg[k] for k in pp_keys if k in cfg}, **force_pp}
    raise WeightsUnavailable(
        f"cannot download pretrained weights '{tag}' for {name} (no network) and they are not cached: "
        f"pass a local checkpoint with --pretrained /path/to/open_clip_model.safetensors, {OFFLINE_RANDOM_HINT}"
    )


def load_teacher(teacher: str, pretrained: str | None) -> Teacher:
    """Build the teacher; every failure is an ExportError with one line of advice."""
    config_path = Path(teacher)
    force_pp: dict = {}
    sides: tuple[int, ...] = ()
    if teacher.endswith(".json"):
        if not config_path.is_file():
            raise ExportError(f"{config_path}: teacher config file not found")
        name, model_cfg, force_pp, sides = _read_config(config_path)
        _register(name, model_cfg)
    else:
        name = teacher
        if name not in open_clip.list_models():
            raise ExportError(
                f"unknown teacher '{teacher}': give an open_clip model name (e.g. ViT-B-32) or a config .json path"
            )
    is_random = pretrained in (None, RANDOM)
    is_file = not is_random and Path(pretrained).is_file()
    tag = None
    if not is_random and not is_file and open_clip.get_pretrained_cfg(name, pretrained):
        tag = pretrained
        pretrained, force_pp = _resolve_tag(name, tag, force_pp)
    if not is_random and not is_file and (pretrained.endswith((".pt", ".bin", ".safetensors", ".pth")) or "/" in pretrained):
        raise ExportError(f"{pretrained}: checkpoint file not found")
    if is_random:
        log.warning("teacher %s has RANDOM weights (--pretrained random): this bundle is a pipeline "
                    "check, not a product search model", name)
    try:
        model = open_clip.create_model(
            name, pretrained=None if is_random else pretrained,
            force_preprocess_cfg=force_pp or None, device="cpu",
        )
    except RuntimeError as e:
        text = str(e)
        if "download" in text.lower() or "connect" in text.lower():
            raise WeightsUnavailable(
                f"could not download pretrained weights '{pretrained}' for {name} (offline?): "
                f"pass a local checkpoint with --pretrained /path/to/open_clip_model.safetensors, {OFFLINE_RANDOM_HINT}"
            ) from None
        if "not a known tag" in text:
            tags = ", ".join(open_clip.list_pretrained_tags_by_model(name)) or "none"
            raise ExportError(f"'{pretrained}' is neither a file nor a pretrained tag of {name} (tags: {tags})") from None
        first = text.strip().splitlines()[0] if text.strip() else type(e).__name__
        raise ExportError(f"{pretrained}: checkpoint does not fit teacher {name} ({first[:200]})") from None
    except (OSError, ValueError, KeyError) as e:
        raise ExportError(f"{pretrained}: cannot load teacher weights ({type(e).__name__}: {str(e)[:200]})") from None
    model.eval()
    pp = model.visual.preprocess_cfg
    preprocess = PreprocessCfg(size=pp["size"], mode=pp["mode"], mean=pp["mean"], std=pp["std"],
                               interpolation=pp["interpolation"], resize_mode=pp["resize_mode"],
                               fill_color=pp["fill_color"])
    if sides and max(sides) > min(preprocess.size):
        raise ExportError(f"{config_path}: test_sides {list(sides)} go above the input side {preprocess.size[0]} "
                          "(the ensemble resizes the input down)")
    embed_dim = int(model.text_projection.shape[-1]) if getattr(model, "text_projection", None) is not None \
        else int(model.encode_image(torch.zeros(1, 3, *preprocess.size)).shape[-1])
    provenance = {
        "model": name,
        "config": str(config_path) if teacher.endswith(".json") else None,
        "pretrained": RANDOM if is_random else (tag or Path(pretrained).name),
        "checkpoint_sha256": sha256_file(Path(pretrained)) if (is_file or tag) and Path(pretrained).is_file() else None,
        "random_weights": is_random,
        "licence": licence_for(name, tag or (None if is_random else pretrained), is_file and not tag),
        "embed_dim": embed_dim,
        "open_clip": open_clip.__version__,
    }
    if sides:
        provenance["test_sides"] = list(sides)
    return Teacher(model=model, name=name, preprocess=preprocess, embed_dim=embed_dim, provenance=provenance,
                   sides=sides)
