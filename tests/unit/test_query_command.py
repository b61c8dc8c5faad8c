"""``tokensentry query``: output formats and statements the store rejects."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from pipeline.cli import main
from pipeline.commands.query import write_result


def test_table_row_longer_than_columns() -> None:
    out = io.StringIO()

    write_result([], [("a", "bb")], "table", out)

    lines = out.getvalue().splitlines()
    assert lines[2] == "a  bb"
    assert lines[-1] == "(1 rows)"


def test_table_row_shorter_than_columns() -> None:
    out = io.StringIO()

    write_result(["first", "second"], [("x",)], "table", out)

    lines = out.getvalue().splitlines()
    assert lines[0] == "first  second"
    assert lines[2] == "x"


def test_json_row_longer_than_columns() -> None:
    out = io.StringIO()

    write_result(["a"], [(1, 2)], "json", out)

    assert json.loads(out.getvalue()) == [{"a": 1, "column_2": 2}]


def test_csv_uses_newline_endings() -> None:
    out = io.StringIO(newline="")

    write_result(["a", "b"], [(1, "x"), (2, "y")], "csv", out)

    assert out.getvalue() == "a,b\n1,x\n2,y\n"


def test_query_kill_rejected_without_traceback(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["store", "migrate", "--data-dir", str(tmp_path)]) == 0
    capsys.readouterr()

    assert main(["query", "--data-dir", str(tmp_path), "KILL QUERY WHERE 1"]) == 2
    err = capsys.readouterr().err

    assert "KILL statements are not allowed" in err
    assert "Traceback" not in err


def test_query_csv_output(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["store", "migrate", "--data-dir", str(tmp_path)]) == 0
    capsys.readouterr()

    assert main(["query", "--data-dir", str(tmp_path), "--format", "csv", "SELECT 1 AS one, 'x' AS two"]) == 0

    assert capsys.readouterr().out == "one,two\n1,x\n"
