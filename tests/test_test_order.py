"""The suite's own scheduling (conftest.pytest_collection_modifyitems): slow tests first within
each pytest-xdist worker's share, the shares themselves unchanged."""

from __future__ import annotations

from tests.conftest import pytest_collection_modifyitems


class Item:
    def __init__(self, name: str, slow: bool):
        self.name, self.slow = name, slow

    def get_closest_marker(self, name: str):
        return object() if name == "slow" and self.slow else None

    def __repr__(self) -> str:
        return self.name


def names(items) -> list[str]:
    return [item.name for item in items]


def test_slow_tests_lead_each_workers_share_and_no_test_changes_share(monkeypatch):
    items = [Item(f"{'s' if index in (1, 4, 6) else 'q'}{index}", index in (1, 4, 6)) for index in range(7)]
    monkeypatch.setenv("PYTEST_XDIST_WORKER_COUNT", "2")
    ordered = list(items)
    pytest_collection_modifyitems(None, ordered)
    # xdist hands the first worker 7 // 2 = 3 tests, the second the other 4.
    assert names(ordered) == ["s1", "q0", "q2", "s4", "s6", "q3", "q5"]


def test_one_process_keeps_the_files_order(monkeypatch):
    items = [Item("q0", False), Item("s1", True)]
    monkeypatch.delenv("PYTEST_XDIST_WORKER_COUNT", raising=False)
    pytest_collection_modifyitems(None, items)
    assert names(items) == ["q0", "s1"]
