"""The manifest's records of how a bundle was made (`teacher`, `student`, `fidelity`), read
through typed dataclasses: old bundles' shapes still read, a malformed field is named.
Runtime only."""

from __future__ import annotations

import pytest

from edge_search.core.manifest import (Agreement, CatalogEncoderChoice, FidelityRecord, PrecisionChoice,
                                       StudentRecord, TeacherRecord)
from edge_search.errors import BundleError, ManifestError

FIDELITY = {
    "int8_vs_fp32": {"mean_cosine": 0.991, "min_cosine": 0.95, "top1_agreement": 1, "attempts": []},
    "fp16_vs_fp32": {"mean_cosine": 0.99999, "min_cosine": 0.9999, "top1_agreement": 1},
    "precision": {"candidates": {"int8": {"ms_p50": 7.1, "bytes": 2}, "fp16": {"ms_p50": 3.0, "bytes": 4}},
                  "chosen": "fp16", "threads": 2},
    "onnx_vs_torch": {"min_cosine": 0.999999, "images": 8},
    "catalog_encoder": {"student": {"augmented_query_top1": 0.5, "held_out_photo_top1": 0.6},
                        "teacher": {"augmented_query_top1": 0.7, "held_out_photo_top1": 0.8},
                        "chosen": "teacher", "decided_by": "held_out_photo_top1", "forced": False},
    "index": {"candidates": [{"label": "i8", "top1_agreement_vs_exact_f32": 0.99, "bytes_per_vector": 64}]},
    "text": {"int8_vs_fp32": {"mean_cosine": 0.98, "min_cosine": 0.9},
             "text_to_image": {"teacher": {"names": {"recall@1": 0.5, "recall@5": 1.0}},
                               "queries": {"names": 12}}},
    "gates": {"enforced": True},
}


def test_records_read_what_inspect_shows():
    f = FidelityRecord.parse(FIDELITY, "m.json")
    assert f.int8_vs_fp32 == Agreement(mean_cosine=0.991, min_cosine=0.95, top1_agreement=1.0)
    assert f.fp16_vs_fp32 == Agreement(mean_cosine=0.99999, min_cosine=0.9999, top1_agreement=1.0)
    assert f.precision == PrecisionChoice(chosen="fp16", ms_p50={"int8": 7.1, "fp16": 3.0})
    assert f.onnx_vs_torch.min_cosine == 0.999999
    assert f.catalog_encoder == CatalogEncoderChoice(decided_by="held_out_photo_top1",
                                                     top1={"student": 0.6, "teacher": 0.8}, chosen="teacher")
    assert f.index_agreement == (("i8", 0.99),)
    assert f.text_int8_vs_fp32.mean_cosine == 0.98 and f.text_names_recall == {"teacher": (0.5, 1.0)}
    t = TeacherRecord.parse({"model": "ViT-B-32", "pretrained": "random", "licence": "MIT", "random_weights": True,
                             "finetune": {"epochs": 3}}, "m.json")
    assert t == TeacherRecord(model="ViT-B-32", pretrained="random", licence="MIT", random_weights=True)
    s = StudentRecord.parse({"arch": "mobilenetv3_small_100", "image_size": 64, "params": 1000,
                             "distillation": {"epochs": 2, "views": 96, "loss": "cosine"}}, "m.json")
    assert s == StudentRecord(arch="mobilenetv3_small_100", image_size=64, params=1000, epochs=2, views=96,
                              loss="cosine")
    assert StudentRecord.parse(None, "m.json") is None  # the teacher's own tower ships


def test_older_bundles_records_still_read():
    # before held-out photos the choice had no `decided_by`; before licences, no `licence`
    f = FidelityRecord.parse({"catalog_encoder": {"student": {"augmented_query_top1": 0.5}, "chosen": "student"}},
                             "m.json")
    assert f.catalog_encoder.decided_by == "augmented_query_top1" and f.catalog_encoder.top1 == {"student": 0.5}
    assert FidelityRecord.parse({}, "m.json") == FidelityRecord()
    assert TeacherRecord.parse({"model": "x"}, "m.json") == TeacherRecord(model="x")


@pytest.mark.parametrize("parse, data, message", [
    (TeacherRecord.parse, {"random_weights": "yes"}, 'teacher.random_weights must be true or false, got "yes"'),
    (StudentRecord.parse, {"distillation": [1]}, "student.distillation must be a JSON object, got a list"),
    (StudentRecord.parse, {"params": 1.5}, "student.params must be a whole number, got 1.5"),
    (FidelityRecord.parse, {"int8_vs_fp32": "fine"}, "fidelity.int8_vs_fp32 must be a JSON object, got text"),
    (FidelityRecord.parse, {"precision": {"candidates": {"int8": {"ms_p50": "fast"}}}},
     'fidelity.precision.candidates.int8.ms_p50 must be a finite number, got "fast"'),
    (FidelityRecord.parse, {"precision": {"candidates": [1]}},
     "fidelity.precision.candidates must be a JSON object, got a list"),
    (FidelityRecord.parse, {"index": {"candidates": [1]}},
     "fidelity.index.candidates[0] must be a JSON object, got a number"),
    (FidelityRecord.parse, {"catalog_encoder": {"decided_by": "held_out_photo_top1", "student": {}}},
     None),  # an option without the deciding figure reads as unknown, not as an error
    (FidelityRecord.parse, {"catalog_encoder": {"student": {"augmented_query_top1": "high"}}},
     'fidelity.catalog_encoder.student.augmented_query_top1 must be a finite number, got "high"'),
])
def test_a_malformed_field_is_named(parse, data, message):
    if message is None:
        assert parse(data, "m.json").catalog_encoder.top1 == {"student": None}
        return
    with pytest.raises(ManifestError) as e:
        parse(data, "b/manifest.json")
    assert str(e.value) == f"b/manifest.json: {message}" and e.value.detail == message
    assert isinstance(e.value, BundleError)  # callers that catch bundle errors catch it
