"""bench/script.py: a report written whole, an error as one line with the script's exit status."""

from __future__ import annotations

import json

import pytest

from bench.script import run, write_report
from edge_search.errors import EdgeSearchError


def test_report_is_written_into_a_new_folder(tmp_path, capsys):
    path = tmp_path / "new" / "report.json"
    write_report(path, {"a": 1})
    assert json.loads(path.read_text()) == {"a": 1} and capsys.readouterr().out == f"wrote {path}\n"
    assert [p.name for p in path.parent.iterdir()] == ["report.json"]  # no temporary file left


def test_our_errors_end_as_one_line_and_their_status(capsys):
    class Broken(EdgeSearchError):
        exit_code = 7

    def main() -> int:
        raise Broken("data/x.csv: no such file")

    with pytest.raises(SystemExit) as e:
        run(main, "bench/x.py")
    assert e.value.code == 7 and capsys.readouterr().err == "bench/x.py: data/x.csv: no such file\n"
    with pytest.raises(SystemExit) as ok:
        run(lambda: 0, "bench/x.py")
    assert ok.value.code == 0
