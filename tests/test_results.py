"""The results file: concurrent appends lose nothing, malformed lines are named, killed writers' leftovers go."""
import multiprocessing
import os
import time

import pytest

from lainctr.errors import InputFileError
from lainctr.results import append_result, read_results, read_table


def _append_rows(path: str, worker: int, count: int) -> None:
    for i in range(count):
        append_result(path, {"run_id": f"w{worker}-{i}", "worker": worker, f"only_w{worker}": i})


def test_concurrent_appends_lose_no_row(tmp_path):
    path = str(tmp_path / "results.csv")
    ctx = multiprocessing.get_context("spawn")
    workers = [ctx.Process(target=_append_rows, args=(path, w, 25)) for w in range(4)]
    for p in workers:
        p.start()
    for p in workers:
        p.join(120)
    assert [p.exitcode for p in workers] == [0, 0, 0, 0]
    rows = read_results(path)
    assert sorted(r["run_id"] for r in rows) == sorted(f"w{w}-{i}" for w in range(4) for i in range(25))
    assert {f"only_w{w}" for w in range(4)} <= set(rows[0])             # every writer's column widened the header
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results.csv"]  # no lock or temporary left


def test_malformed_line_names_file_and_line(tmp_path):
    path = tmp_path / "results.csv"
    path.write_text("run_id,test_AUC\nr1,0.7\n\nr2,0.8,extra\n")
    with pytest.raises(InputFileError, match=rf"^{path}: line 4: 3 fields, the header has 2"):
        read_results(str(path))
    with pytest.raises(InputFileError, match="line 4"):
        append_result(str(path), {"run_id": "r3", "test_AUC": 0.9})
    assert path.read_text() == "run_id,test_AUC\nr1,0.7\n\nr2,0.8,extra\n"  # left as it was


def test_unterminated_quote_names_file(tmp_path):
    path = tmp_path / "results.csv"
    path.write_text('run_id,params\nr1,"{\\"a\\": 1}\n')
    with pytest.raises(InputFileError, match=rf"^{path}: line \d+: not readable as CSV"):
        read_results(str(path))


def test_blank_lines_and_empty_file_hold_no_rows(tmp_path):
    path = tmp_path / "results.csv"
    path.write_text("")
    assert read_results(str(path)) == []
    path.write_text("run_id\nr1\n\nr2\n")
    table = read_table(str(path))
    assert [r["run_id"] for r in table.rows] == ["r1", "r2"] and table.lines == [2, 4]


def test_killed_writers_temporaries_are_removed_at_the_next_append(tmp_path):
    path = tmp_path / "results.csv"
    (tmp_path / ".results.csv.tmp-1234abcd.csv").write_text("half")  # a SIGKILLed writer's, under the new scheme
    legacy_old, legacy_new = tmp_path / ".results-old.csv", tmp_path / ".results-new.csv"
    legacy_old.write_text("half")
    legacy_new.write_text("half")
    day_ago = time.time() - 2 * 24 * 3600
    os.utime(legacy_old, (day_ago, day_ago))
    append_result(str(path), {"run_id": "r1"})
    assert sorted(p.name for p in tmp_path.iterdir()) == [".results-new.csv", "results.csv"]
