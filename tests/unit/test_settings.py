"""Settings: a bad value names its variable; an unknown `EVENTCRM_*` name is warned about."""

from __future__ import annotations

import pytest

from domain.errors import ConfigurationError
from infra.settings import debug_requested, dotenv_names, load_settings, unknown_variables


def test_a_misspelt_variable_is_warned_about_with_the_closest_known_name() -> None:
    assert unknown_variables(["EVENTCRM_DATABSE_URL", "PATH"]) == [
        "EVENTCRM_DATABSE_URL is not an eventcrm setting and is ignored; "
        "did you mean EVENTCRM_DATABASE_URL?"
    ]


def test_known_variables_and_other_programs_variables_are_not_warned_about() -> None:
    names = ["EVENTCRM_DATABASE_URL", "EVENTCRM_DEBUG", "EVENTCRM_TEST_DATABASE_URL", "HOME"]
    assert unknown_variables(names) == []


def test_an_unknown_name_far_from_every_setting_gets_no_guess() -> None:
    assert unknown_variables(["EVENTCRM_ZZZ"]) == [
        "EVENTCRM_ZZZ is not an eventcrm setting and is ignored"
    ]


def test_each_unknown_name_is_warned_about_once() -> None:
    assert len(unknown_variables(["EVENTCRM_MASTR_KEY", "EVENTCRM_MASTR_KEY"])) == 1


def test_dotenv_names_are_read_with_or_without_export_and_comments_are_skipped() -> None:
    text = "# a comment\nEVENTCRM_HOME=/x\nexport EVENTCRM_POLICY = p.toml\n\nnot a line\n"
    assert dotenv_names(text) == ["EVENTCRM_HOME", "EVENTCRM_POLICY"]


def test_a_value_that_does_not_parse_names_its_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EVENTCRM_LOCK_TIMEOUT_SECONDS", "abc")
    monkeypatch.setenv("EVENTCRM_IMPORT_WORKERS", "two")
    with pytest.raises(ConfigurationError) as caught:
        load_settings()
    assert caught.value.code == "invalid_setting"
    assert "EVENTCRM_LOCK_TIMEOUT_SECONDS='abc'" in caught.value.message
    assert "EVENTCRM_IMPORT_WORKERS='two'" in caught.value.message


@pytest.mark.parametrize(("value", "on"), [("1", True), ("yes", True), ("0", False), ("", False)])
def test_debug_is_requested_by_a_truthy_eventcrm_debug(value: str, on: bool) -> None:
    assert debug_requested({"EVENTCRM_DEBUG": value}) is on
