"""bench/kiosk.py end to end on the committed tiny bundle, small enough for CI: every stage timed at two
sizes, and with --confirm the frame's centre searched on the same frames, side by side."""

from __future__ import annotations

import json
import subprocess
import sys

from conftest import COMMITTED, REPO


def test_kiosk_bench_times_the_confirm_search_beside_the_path(tmp_path):
    out = tmp_path / "kiosk.json"
    proc = subprocess.run([sys.executable, str(REPO / "bench" / "kiosk.py"), "--bundle", str(COMMITTED),
                           "--sizes", "50", "300", "--frames", "6", "--warmup", "1", "--confirm", "--out", str(out)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    r = json.loads(out.read_text())
    assert [s["products"] for s in r["sizes"]] == [50, 300] and r["frames"] == 6
    for s in r["sizes"]:
        plain, checked = s["frame_to_results_ms"], s["frame_to_results_with_confirm_ms"]
        assert s["confirm_ms"]["p50"] > 0
        # the same frames with one more search each: never faster at any percentile
        assert checked["p50"] >= plain["p50"] and checked["p95"] >= plain["p95"]
    assert "frame->results +conf" in proc.stdout
