"""Every bad input of the catalogue (benchmarks/bad_inputs.py) ends in a clear error, or for
merely unusual images in a correct load, with nothing on disk changed (tiny random model)."""

from __future__ import annotations

import pytest

from benchmarks.bad_inputs import Case, catalogue, run_case
from tests.tiny_vlm import tiny_model


@pytest.fixture
def cases(tiny_parts) -> list[Case]:
    return catalogue(tiny_model(tiny_parts))


def test_the_catalogue_covers_every_entry_point(cases):
    groups = {case.group for case in cases}
    assert groups == {"image", "jsonl", "conversation", "checkpoint", "message", "settings"}
    assert len(cases) >= 60 and len({(case.group, case.name) for case in cases}) == len(cases)


def test_every_bad_input_ends_clearly_and_changes_nothing(cases):
    failures = [f"{outcome.case.group} / {outcome.case.name}: {outcome.detail}"
                for outcome in map(run_case, cases) if not outcome.ok]
    assert not failures, "\n".join(failures)


def test_the_judge_catches_an_unclear_error_a_wrong_load_and_a_changed_folder(tmp_path):
    def raises_key_error(folder):
        return lambda: {}["missing"]

    def writes(folder):
        return lambda: (folder / "new.txt").write_text("x") and None

    assert not run_case(Case("x", "bare KeyError", raises_key_error, "anything")).ok
    assert not run_case(Case("x", "accepted but expected an error", lambda folder: lambda: 1, "must fail")).ok
    assert not run_case(Case("x", "loaded wrongly", lambda folder: lambda: 1, None, check=lambda value: False)).ok
    assert not run_case(Case("x", "changed the folder", writes, None)).ok
    assert run_case(Case("x", "a good load", lambda folder: lambda: 1, None, check=lambda value: value == 1)).ok
