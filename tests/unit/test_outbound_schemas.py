"""The outbound contract's guard: committed schemas change only compatibly within a
version (docs/outbound.md), they cover every value the projections can publish, and the
checker itself catches the incompatible edits it is there for."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any, get_args

import pytest

from adapters.outbound import TOPICS, incompatibilities, load_schema, schema_files, topic_of
from adapters.outbound import validator as validator_of
from domain.errors import UsageError
from projections.vocabulary import STAGES, TIERS, AlertState

RELEASED = Path(__file__).parent / "released_schemas"
DOCS = Path(__file__).parents[2] / "docs" / "outbound.md"


def released(topic: str, version: int) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((RELEASED / f"{topic}.v{version}.json").read_text())
    return loaded


@pytest.mark.parametrize(("topic", "version"), sorted(schema_files()))
def test_a_committed_schema_is_a_compatible_edit_of_its_released_copy(
    topic: str, version: int
) -> None:
    assert (RELEASED / f"{topic}.v{version}.json").exists(), "copy it when you release it"
    assert incompatibilities(released(topic, version), load_schema(topic, version)) == []


@pytest.mark.parametrize(("topic", "version"), sorted(schema_files()))
def test_a_schema_names_its_topic_and_version(topic: str, version: int) -> None:
    schema = load_schema(topic, version)
    assert schema["$id"] == f"urn:eventcrm:topic:{topic}:v{version}"
    assert schema["x-version"] == version
    validator_of(topic, version).check_schema(schema)


def test_every_outbound_topic_has_a_schema() -> None:
    assert {topic for topic, _ in schema_files()} == set(TOPICS)


def _values(literal: object) -> set[str]:
    out: set[str] = set()
    for arg in get_args(literal):
        out |= {arg} if isinstance(arg, str) else _values(arg)
    return out


@pytest.mark.parametrize(
    ("topic", "values"),
    [
        ("churn-alerts", _values(AlertState)),
        ("tier-changes", set(TIERS)),
        ("lifecycle-changes", set(STAGES)),
    ],
)
def test_the_change_schemas_cover_every_value_the_projections_publish(
    topic: str, values: set[str]
) -> None:
    """A new tier, stage or alert state is an incompatible change (subscribers switch
    on these): this fails until the schema, and with it the version, is changed."""
    properties = load_schema(topic)["properties"]
    assert set(properties["from_value"]["enum"]) == values
    assert set(properties["to_value"]["enum"]) == values


def _edited(edit: Any) -> dict[str, Any]:
    schema = copy.deepcopy(load_schema("churn-alerts"))
    edit(schema)
    return schema


@pytest.mark.parametrize(
    ("edit", "found"),
    [
        (lambda s: s["required"].remove("alert_id"), "no longer required"),
        (lambda s: s["properties"].pop("reannounced"), "removed"),
        (lambda s: s["properties"]["customer_id"].update(type=["string", "null"]), "widened"),
        (lambda s: s["properties"]["to_value"]["enum"].append("paused"), "enum gained"),
        (lambda s: s["properties"]["kind"].update(const="alerts"), "const changed"),
        (lambda s: s["properties"]["change_id"].update(pattern="^chg-"), "pattern changed"),
        (lambda s: s["$defs"]["reason"]["properties"]["points"].update(type="number"), "widened"),
    ],
)
def test_the_checker_finds_an_incompatible_edit(edit: Any, found: str) -> None:
    problems = incompatibilities(load_schema("churn-alerts"), _edited(edit))
    assert any(found in p for p in problems), problems


@pytest.mark.parametrize(
    "edit",
    [
        lambda s: s["properties"].update(severity={"type": "string"}),
        lambda s: s["required"].append("reannounced"),
        lambda s: s["properties"]["to_value"]["enum"].remove("closed"),
        lambda s: s["properties"]["change_id"].update(description="another text"),
    ],
)
def test_the_checker_lets_compatible_edits_through(edit: Any) -> None:
    assert incompatibilities(load_schema("churn-alerts"), _edited(edit)) == []


@pytest.mark.parametrize(
    ("name", "topic"),
    [
        ("churn-alerts", "churn-alerts"),
        ("eventcrm.churn-alerts", "churn-alerts"),
        ("acme.interactions.dlq", "interactions.dlq"),
        ("tier-changes", "tier-changes"),
    ],
)
def test_a_topic_is_named_with_or_without_its_prefix(name: str, topic: str) -> None:
    assert topic_of(name) == topic


def test_an_unknown_topic_is_a_usage_error_naming_the_choices() -> None:
    with pytest.raises(UsageError, match="churn-alerts") as refused:
        topic_of("interactions")
    assert refused.value.code == "unknown_topic"


def test_every_example_in_the_docs_validates_against_its_schema() -> None:
    """docs/outbound.md shows one message per topic under a `### TOPIC` heading."""
    text = DOCS.read_text("utf-8")
    examples = re.findall(r"^### `(?P<topic>[^`]+)`.*?```json\n(?P<body>.*?)```", text, re.M | re.S)
    assert {topic for topic, _ in examples} == set(TOPICS)
    for topic, body in examples:
        validator_of(topic).validate(json.loads(body))
