"""The outbound contract: a versioned JSON Schema per message type eventcrm publishes.

The schemas are the committed files ``adapters/schemas/TOPIC.vN.json`` (TOPIC without
the deployment's prefix); docs/outbound.md documents each. The rule
(docs/outbound.md, "Compatibility"): a published version only ever changes in ways a
subscriber written against it keeps working with; anything else is a new version, and
:func:`incompatibilities` is the check a unit test runs against the released copies.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from functools import cache
from importlib import resources
from typing import Any, Final

from jsonschema import Draft202012Validator

from domain.errors import UsageError

TOPICS: Final = (
    "churn-alerts",
    "tier-changes",
    "lifecycle-changes",
    "customer-events",
    "interactions.dlq",
)
"""The topics with an outbound schema, by their names under the prefix."""
_FILE: Final = re.compile(r"^(?P<topic>.+)\.v(?P<version>[1-9][0-9]*)\.json$")


@cache
def schema_files() -> dict[tuple[str, int], str]:
    """(topic, version) -> file name, for every committed schema."""
    found: dict[tuple[str, int], str] = {}
    for entry in resources.files("adapters").joinpath("schemas").iterdir():
        match = _FILE.match(entry.name)
        if match:
            found[(match["topic"], int(match["version"]))] = entry.name
    return found


def versions(topic: str) -> list[int]:
    return sorted(v for t, v in schema_files() if t == topic)


def load_schema(topic: str, version: int | None = None) -> dict[str, Any]:
    """The schema of ``topic`` (its latest version unless named)."""
    chosen = version if version is not None else max(versions(topic), default=0)
    name = schema_files().get((topic, chosen))
    if name is None:
        raise UsageError(
            f"no schema version {chosen} for the topic {topic}",
            code="unknown_schema_version",
            hint=f"versions: {', '.join(map(str, versions(topic))) or 'none'}",
        )
    text = resources.files("adapters").joinpath("schemas", name).read_text("utf-8")
    loaded: dict[str, Any] = json.loads(text)
    return loaded


def topic_of(name: str) -> str:
    """A topic named as on the command line: ``churn-alerts``, or with any prefix
    (``eventcrm.churn-alerts``). Unknown names are a usage error listing the choices."""
    wanted = name.strip()
    for topic in sorted(TOPICS, key=len, reverse=True):
        if wanted == topic or wanted.endswith("." + topic):
            return topic
    raise UsageError(
        f"no outbound schema for the topic {name!r}",
        code="unknown_topic",
        hint=f"choose one of {', '.join(TOPICS)} (the input contract: `eventcrm schema`)",
    )


def validator(topic: str, version: int | None = None) -> Draft202012Validator:
    """A validator of one message type, checking formats (date-time) too."""
    return Draft202012Validator(
        load_schema(topic, version), format_checker=Draft202012Validator.FORMAT_CHECKER
    )


# --- compatibility -----------------------------------------------------------------

_FROZEN: Final = (
    "pattern",
    "format",
    "minLength",
    "maxLength",
    "minimum",
    "maximum",
    "minItems",
    "maxItems",
    "contentEncoding",
    "anyOf",
    "oneOf",
    "allOf",
)
"""Keywords whose value may not change within a version (a conservative rule: loosening
them could let through messages old subscribers reject)."""


def incompatibilities(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    """Why messages valid under ``new`` might break a subscriber written against ``old``
    (empty: ``new`` is a backward-compatible edit of ``old``). Compatible: adding an
    optional property, requiring more, narrowing a type or an enum, editing descriptions.
    Incompatible: removing or un-requiring a required property, widening a type, adding
    an enum value, changing a const, a pattern or a bound, closing nothing that was open."""
    problems: list[str] = []
    _compare(old, new, roots=(old, new), at="$", problems=problems)
    return problems


def _resolve(node: Mapping[str, Any], root: Mapping[str, Any]) -> Mapping[str, Any]:
    ref = node.get("$ref")
    if not isinstance(ref, str):
        return node
    target: Any = root
    for part in ref.removeprefix("#/").split("/"):
        target = target[part]
    return _resolve(target, root)


def _types(node: Mapping[str, Any]) -> set[str] | None:
    kind = node.get("type")
    if kind is None:
        return None
    return {kind} if isinstance(kind, str) else set(kind)


def _compare(  # noqa: PLR0912 - one check per keyword reads best as a flat list
    old_node: Mapping[str, Any],
    new_node: Mapping[str, Any],
    *,
    roots: tuple[Mapping[str, Any], Mapping[str, Any]],
    at: str,
    problems: list[str],
) -> None:
    old_root, new_root = roots
    old = _resolve(old_node, old_root)
    new = _resolve(new_node, new_root)
    old_types, new_types = _types(old), _types(new)
    if old_types is not None and (new_types is None or not new_types <= old_types):
        problems.append(f"{at}: type widened from {sorted(old_types)} to {new.get('type')}")
    if "enum" in old:
        added = [v for v in new.get("enum", [object()]) if v not in old["enum"]]
        if "enum" not in new or added:
            problems.append(f"{at}: enum gained {added or 'any value'}")
    if "const" in old and new.get("const", object()) != old["const"]:
        problems.append(f"{at}: const changed")
    for keyword in _FROZEN:
        if keyword in old and new.get(keyword) != old[keyword]:
            problems.append(f"{at}: {keyword} changed from {old[keyword]!r}")
    lost = sorted(set(old.get("required", [])) - set(new.get("required", [])))
    if lost:
        problems.append(f"{at}: no longer required: {lost}")
    old_props = old.get("properties", {})
    new_props = new.get("properties", {})
    if old.get("additionalProperties") is False:
        extra = sorted(set(new_props) - set(old_props))
        if extra or new.get("additionalProperties") is not False:
            problems.append(f"{at}: properties added to a closed object: {extra}")
    for name, old_prop in old_props.items():
        if name in new_props:
            _compare(old_prop, new_props[name], roots=roots, at=f"{at}.{name}", problems=problems)
        else:  # it may still appear, now with any value
            problems.append(f"{at}: property {name!r} removed")
    if "items" in old:
        if "items" not in new:
            problems.append(f"{at}: items no longer constrained")
        else:
            _compare(old["items"], new["items"], roots=roots, at=f"{at}[]", problems=problems)
