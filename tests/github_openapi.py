"""Validate requests the action sends and answers the fake GitHub gives against GitHub's REST description
(the subset in tests/data/github-openapi/, cut from the npm package @octokit/openapi)."""

from __future__ import annotations

import json
import re
from functools import cache
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator

SUBSET = Path(__file__).resolve().parent / "data" / "github-openapi" / "api.github.com.subset.json"


@cache
def spec() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(SUBSET.read_text(encoding="utf-8"))
    return data


def _template_regex(template: str) -> re.Pattern[str]:
    return re.compile("^" + re.sub(r"\\\{[^}]+\\\}", "[^/]+", re.escape(template)) + "$")


def operation(method: str, path: str) -> dict[str, Any]:
    """The operation for a concrete path like /repos/o/r/installation; KeyError names a missing one."""
    for template, item in spec()["paths"].items():
        if _template_regex(template).match(path) and method.lower() in item:
            op: dict[str, Any] = item[method.lower()]
            return op
    raise KeyError(f"{method} {path} is not in the OpenAPI subset (add it to extract.py)")


def _resolve(node: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in node:
        _, _, kind, name = node["$ref"].split("/", 3)
        node = spec()["components"][kind][name]
    return node


def _check(schema: dict[str, Any], instance: Any) -> None:
    Draft202012Validator({**schema, "components": spec()["components"]}).validate(instance)


def validate_request(method: str, path: str, body: Any) -> None:
    op = operation(method, path)
    request_body = op.get("requestBody")
    if request_body is None:
        assert body in (None, b"", {}), f"{method} {path} takes no body"
        return
    _check(_resolve(request_body)["content"]["application/json"]["schema"], body)


def validate_response(method: str, path: str, status: int, body: Any) -> None:
    responses = operation(method, path)["responses"]
    assert str(status) in responses, f"{method} {path} never answers {status} (documented: {sorted(responses)})"
    content = _resolve(responses[str(status)]).get("content", {})
    schema = content.get("application/json", {}).get("schema")
    if schema is not None:
        _check(schema, body)
