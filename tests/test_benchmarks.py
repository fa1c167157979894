"""The benchmark suite's output (benchmarks/suite.py): what a person watching a run reads."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

SUITE = Path(__file__).resolve().parent.parent / "benchmarks" / "suite.py"


def _suite():
    spec = importlib.util.spec_from_file_location("bench_suite", SUITE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


ROW = dict(
    scenario="fan-out", clients=1000, rate=100.0, delivered=99993.0, loss=0.0, p50=2.4,
    p99=5.0, max=9.6, gw_cpu=0.35, load_cpu=0.30, us_per_event=4.3,
)


def test_progress_lines_are_readable_not_reprs() -> None:
    suite = _suite()
    row = suite.Row(**ROW)
    line = row.progress()
    assert "Row(" not in line
    assert line == (
        "fan-out: 1,000 clients x 100 msg/s: 99,993 deliveries/s, loss 0.00%, "
        "p50/p99/max 2.4/5.0/9.6 ms, gateway CPU 35% (4.3 µs/delivery), load CPU 30%"
    )


def test_printing_a_row_gives_the_readable_line() -> None:
    row = _suite().Row(**ROW)
    assert str(row) == row.progress()


def test_the_table_row_matches_its_head() -> None:
    suite = _suite()
    row = suite.Row(**ROW).table_row()
    assert row == "| fan-out | 1,000 | 100 | 99,993 | 0.00% | 2.4 | 5.0 | 9.6 | 35% | 4.3 | 30% |"
    assert row.count("|") == suite.TABLE_HEAD[0].count("|")
