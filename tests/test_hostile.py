"""Every attack in tests/hostile_*.py harms no reader (the README's hostile-input table)."""

from __future__ import annotations

import importlib

import pytest

from tests.hostile import Row, areas, table


@pytest.mark.parametrize("area", areas())
def test_no_attack_harms_a_reader(area: str) -> None:
    rows = list(importlib.import_module(area).attacks())

    assert rows, f"{area} tries no attack"
    harmed = [r for r in rows if r.harmed]
    assert not harmed, table(harmed)


def test_table_has_one_line_per_attack() -> None:
    rows = [Row("a", "b", "c", 0), Row("d", "e", "f", 0)]

    assert table(rows).splitlines()[2:] == ["| a | b | c | 0 |", "| d | e | f | 0 |"]
