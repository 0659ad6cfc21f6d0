"""A teacher config's `test_sides`: the image tower run at several input sides, unit vectors averaged
(export/teacher.py). Checked on a tiny timm CNN with random weights saved to a checkpoint file."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from conftest import TINY_CNN as CNN, make_checkpoint, one_line_error, run_cli

pytestmark = pytest.mark.export
torch = pytest.importorskip("torch", reason="export tests need the [export] extra")


def _config(folder: Path, name: str, **extra) -> Path:
    path = folder / f"{name}.json"
    path.write_text(json.dumps({**CNN, **extra}), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def cnn(tmp_path_factory):
    """(config with test_sides [32, 64], the same without, a checkpoint both load)."""
    folder = tmp_path_factory.mktemp("cnn")
    plain = _config(folder, "tiny-cnn-test")
    sides = _config(folder, "tiny-cnn-sides", test_sides=[32, 64])
    return sides, plain, make_checkpoint(plain, folder / "tiny-cnn.pt")


def test_ensemble_is_the_mean_of_unit_vectors_at_each_side(cnn):
    from edge_search_export.teacher import load_teacher

    sides_cfg, plain_cfg, ckpt = cnn
    ens, one = load_teacher(str(sides_cfg), str(ckpt)), load_teacher(str(plain_cfg), str(ckpt))
    assert ens.sides == (32, 64) and one.sides == () and ens.provenance["test_sides"] == [32, 64]
    x = np.random.default_rng(0).standard_normal((3, 3, 64, 64)).astype(np.float32)
    small = torch.nn.functional.interpolate(torch.from_numpy(x), size=(32, 32), mode="bilinear",
                                            align_corners=False).numpy()
    want = one.encode(small) + one.encode(x)
    want /= np.linalg.norm(want, axis=1, keepdims=True)
    got = ens.encode(x)
    np.testing.assert_allclose(got, want, atol=1e-5)
    assert np.abs(got - one.encode(x)).max() > 1e-3  # the ensemble is not the single pass
    # same weights, other vectors: the embedding cache must not mix them up
    assert ens.weights_sha256() != one.weights_sha256()


def test_ensemble_exports_to_onnx_as_it_embeds(cnn, tmp_path):
    from edge_search.core.encoder import OnnxEncoder
    from edge_search_export.onnx_export import export_onnx
    from edge_search_export.student import Embedder
    from edge_search_export.teacher import load_teacher

    sides_cfg, _, ckpt = cnn
    teacher = load_teacher(str(sides_cfg), str(ckpt))
    export_onnx(Embedder(teacher.image_tower).eval(), (64, 64), tmp_path / "t.onnx")
    x = np.random.default_rng(1).standard_normal((2, 3, 64, 64)).astype(np.float32)
    got = OnnxEncoder(tmp_path / "t.onnx", input_name="image", output_name="embedding", threads=1).embed(x)
    np.testing.assert_allclose(got, teacher.encode(x), atol=1e-5)


@pytest.mark.parametrize("sides, says", [
    ([0, 64], "test_sides must be a list of distinct input sides"),
    ([64, 64], "test_sides must be a list of distinct input sides"),
    ("64", "test_sides must be a list of distinct input sides"),
    ([32, 96], "go above the input side 64"),
])
def test_bad_test_sides_is_one_line_naming_the_config(cnn, tmp_path, sample_catalog, sides, says):
    _, _, ckpt = cnn
    config = _config(tmp_path, "tiny-cnn-bad", test_sides=sides)
    proc = run_cli("export", "--catalog", sample_catalog, "--out", tmp_path / "out", "--teacher", config,
                   "--pretrained", ckpt, "--quiet", check=False)
    assert proc.returncode == 2
    one_line_error(proc, str(config), says)
    assert not (tmp_path / "out").exists()
