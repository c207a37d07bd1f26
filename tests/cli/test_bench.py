"""``rnnparity bench``: a smoke run of the suite's plumbing (never a timing assertion)."""

from __future__ import annotations

import json

from rnnparity.cli.common import ExitCode
from rnnparity.cli.main import main


def test_bench_json_reports_agreement_and_ratios(capsys) -> None:
    code = main(["bench", "--quick", "--repeats", "1", "--only", "W5",
                 "--impl", "rnnparity-numpy,rnnparity-fast", "--json"])
    body = json.loads(capsys.readouterr().out)
    assert code == ExitCode.OK and body["command"] == "bench"
    (work,) = body["result"]["workloads"]
    assert work["key"] == "W5" and work["stream"]
    rows = work["results"]
    assert "rnnparity-numpy" in rows
    for name, row in rows.items():
        assert row["max_abs_diff"] <= 1e-5
        assert row["seconds"] > 0 and row["ratio"][name] == 1.0
    skipped = set(body["result"]["skipped"])
    assert set(rows) | skipped == {"rnnparity-numpy", "rnnparity-fast"}


def test_bench_markdown_updates_a_marked_section(capsys, tmp_path) -> None:
    doc = tmp_path / "perf.md"
    doc.write_text("before\n<!-- bench:start -->\nold\n<!-- bench:end -->\nafter\n")
    code = main(["bench", "--quick", "--repeats", "1", "--only", "W5",
                 "--impl", "rnnparity-numpy", "--markdown", "--update", str(doc)])
    text = doc.read_text()
    assert code == ExitCode.OK
    assert "old" not in text and text.startswith("before\n") and text.endswith("after\n")
    assert "| W5 LSTM in 1, hidden 8" in text
    assert "| W5 LSTM in 1, hidden 8" in capsys.readouterr().out


def test_bench_rejects_unknown_workload(capsys) -> None:
    code = main(["bench", "--only", "W9"])
    err = capsys.readouterr().err
    assert code == ExitCode.BAD_INPUT and "W1" in err and err.count("\n") == 1
