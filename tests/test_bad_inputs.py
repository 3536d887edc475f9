"""Every bad input of the catalogue (benchmarks/bad_inputs.py) ends in a clear error, or for
merely unusual images in a correct load, with nothing on disk changed (tiny random model)."""

from __future__ import annotations

import pytest

from benchmarks.bad_inputs import Case, catalogue, run_case, run_cases
from tests.tiny_vlm import tiny_model


@pytest.fixture
def cases(tiny_parts) -> list[Case]:
    return catalogue(tiny_model(tiny_parts))


def test_the_catalogue_covers_every_entry_point(cases):
    groups = {case.group for case in cases}
    assert groups == {"image", "jsonl", "conversation", "checkpoint", "message", "settings"}
    assert len(cases) >= 60 and len({(case.group, case.name) for case in cases}) == len(cases)


@pytest.mark.slow
def test_every_bad_input_ends_clearly_and_changes_nothing(cases):
    failures = [f"{outcome.case.group} / {outcome.case.name}: {outcome.detail}"
                for outcome in run_cases(cases) if not outcome.ok]
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


def test_the_data_judge_is_the_validator_and_catches_an_accepted_file_and_a_wrong_reason(tmp_path):
    good = '{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}\n'

    def data(text):
        return lambda folder: (folder / "data.jsonl").write_text(text) and folder / "data.jsonl"

    outcomes = run_cases([Case("x", "a good file", data(good), None, data_file=True),
                          Case("x", "accepted but expected an error", data(good), "bad", data_file=True),
                          Case("x", "refused, wrong reason", data("{"), "role", data_file=True),
                          Case("x", "refused, right reason", data("{"), "data.jsonl:1: not valid JSON",
                               data_file=True),
                          Case("x", "a folder, not a file", lambda folder: folder, "no such file", data_file=True)])
    assert [outcome.ok for outcome in outcomes] == [True, False, False, True, True]
    assert outcomes[1].detail.startswith("accepted") and "does not say 'role'" in outcomes[2].detail
