#!/usr/bin/env python3
"""Cut the operations the action uses out of GitHub's OpenAPI description (npm package @octokit/openapi).

usage: extract.py PATH/TO/package/generated/api.github.com.json > api.github.com.subset.json

The result keeps each listed path (all its methods) and every component it references, with OpenAPI
3.0's `nullable: true` rewritten as JSON Schema (`type: [T, "null"]`), so `jsonschema` validates with it.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

PATHS = (
    "/app",
    "/app/installations/{installation_id}/access_tokens",
    "/repos/{owner}/{repo}/installation",
    "/users/{username}",
    "/repos/{owner}/{repo}/commits/{ref}/check-runs",
    "/repos/{owner}/{repo}/actions/jobs/{job_id}/logs",
    "/repos/{owner}/{repo}/pulls/{pull_number}/comments/{comment_id}/replies",
    "/repos/{owner}/{repo}/pulls/{pull_number}/commits",
    "/repos/{owner}/{repo}/pulls/{pull_number}",
    "/repos/{owner}/{repo}/issues/{issue_number}/comments",
    "/repos/{owner}/{repo}/issues/comments/{comment_id}",
    "/repos/{owner}/{repo}/issues/comments/{comment_id}/reactions",
    "/repos/{owner}/{repo}/issues/{issue_number}/labels",
    "/repos/{owner}/{repo}/pulls",
    "/repos/{owner}/{repo}/pulls/comments/{comment_id}",
    "/repos/{owner}/{repo}/pulls/comments/{comment_id}/reactions",
    "/repos/{owner}/{repo}/actions/jobs/{job_id}",
    "/repos/{owner}/{repo}/collaborators/{username}/permission",
)


def refs(node: Any, found: set[str]) -> None:
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/components/"):
            found.add(ref)
        for value in node.values():
            refs(value, found)
    elif isinstance(node, list):
        for value in node:
            refs(value, found)


def nullable_to_json_schema(node: Any) -> Any:
    if isinstance(node, list):
        return [nullable_to_json_schema(v) for v in node]
    if not isinstance(node, dict):
        return node
    out = {k: nullable_to_json_schema(v) for k, v in node.items() if k not in ("example", "examples")}
    if out.pop("nullable", False):
        if "type" in out:
            out["type"] = [out["type"], "null"] if isinstance(out["type"], str) else [*out["type"], "null"]
        if "enum" in out and None not in out["enum"]:
            out["enum"] = [*out["enum"], None]
        if "$ref" in out or "allOf" in out or "anyOf" in out or "oneOf" in out:
            out = {"anyOf": [out, {"type": "null"}]}
    return out


def main() -> None:
    spec = json.loads(Path(sys.argv[1]).read_text(encoding="utf-8"))
    subset: dict[str, Any] = {"openapi": spec["openapi"], "info": spec["info"], "paths": {}, "components": {}}
    for path in PATHS:
        subset["paths"][path] = spec["paths"][path]
    pending: set[str] = set()
    refs(subset["paths"], pending)
    done: set[str] = set()
    while pending - done:
        ref = sorted(pending - done)[0]
        done.add(ref)
        _, _, kind, name = ref.split("/", 3)
        target = spec["components"][kind][name]
        subset["components"].setdefault(kind, {})[name] = target
        refs(target, pending)
    json.dump(nullable_to_json_schema(subset), sys.stdout, indent=1, sort_keys=True)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
