"""``fcn-scratch bench`` runs end to end (one repeat, one small case) and prints its table."""

import re

import pytest

from fcn_scratch.cli import main


@pytest.mark.torch
def test_bench_prints_a_row_with_every_column(capsys, torch):
    assert main(["bench", "--repeat", "1", "--threads", "1", "--case", "convT k4"]) == 0
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if line.startswith("| convT k4")]
    assert len(rows) == 1
    cells = [c.strip() for c in rows[0].strip("|").split("|")]
    assert len(cells) == 6
    assert all(re.fullmatch(r"\d+\.\d+", c) for c in cells[1:]), cells  # every column timed


def test_bench_refuses_an_unknown_case(capsys):
    assert main(["bench", "--case", "no such case"]) == 2
    assert "no case name contains" in capsys.readouterr().out
