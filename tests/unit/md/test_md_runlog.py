"""log.csv survives a kill during a flush: the torn last row is cut off on restart and skipped by readers (both
said so); a malformed row in the middle is one MLFFError naming the file and line."""

from __future__ import annotations

import pytest

from mlff.errors import MLFFError
from mlff.md.runlog import CsvLog, read_log

COLUMNS = ["step", "time_fs", "system", "potential_energy"]


def _log(path, steps):
    log = CsvLog(path, COLUMNS)
    for step in steps:
        log.add([step, step * 0.5, 0, -1.25 * step])
    log.flush()


def test_a_torn_row_is_skipped_by_readers_and_cut_off_on_restart(tmp_path, capsys):
    path = tmp_path / "log.csv"
    _log(path, range(0, 40, 10))
    with open(path, "a") as handle:
        handle.write("4")  # kill -9 while writing the row of step 40: the step field parses as 4
    assert [row["step"] for row in read_log(path)] == [0, 10, 20, 30]
    assert "log.csv: skipped its torn last line (line 7, '4')" in capsys.readouterr().err
    log = CsvLog(path, COLUMNS, restart_step=30)
    assert "log.csv: removed a torn last line (1 bytes, '4')" in capsys.readouterr().err
    log.add([40, 20.0, 0, -50.0])
    log.flush()
    rows = read_log(path)
    assert [row["step"] for row in rows] == [0, 10, 20, 30, 40] and rows[-1]["potential_energy"] == -50.0
    assert capsys.readouterr().err == ""


def test_a_malformed_middle_row_is_one_line_naming_file_and_line(tmp_path):
    path = tmp_path / "log.csv"
    _log(path, range(0, 40, 10))
    lines = path.read_text().splitlines(keepends=True)
    path.write_text("".join([*lines[:3], "10,5.0,0\n", *lines[4:]]))
    with pytest.raises(MLFFError, match=r"log.csv line 4 has 3 values, the header names 4 columns"):
        read_log(path)
    with pytest.raises(MLFFError, match=r"log.csv line 4 has 3 values"):
        CsvLog(path, COLUMNS, restart_step=20)  # not appended to
    path.write_text("".join([*lines[:4], "20,10.0,0,oops\n", *lines[5:]]))
    with pytest.raises(MLFFError, match=r"log.csv line 5 has 'oops' for potential_energy, not a number"):
        read_log(path)
