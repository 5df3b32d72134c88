"""Reading an output directory back, normalising it for snapshots, and JupiterOne conformance checks."""

from __future__ import annotations

import json
from pathlib import Path

from engine import datamodel
from engine.pipeline.plan import Plan

VOLATILE_STEP_FIELDS = ("startTime", "endTime", "duration")


def read_output(root: Path) -> dict:
    """{'entities': [...], 'relationships': [...], 'files': [(path, collection, objects)], 'summary': {...}}"""
    entities, relationships, files = [], [], []
    for path in sorted((root / "graph").rglob("*.json")):
        data = json.loads(path.read_text())
        ((collection, objects),) = data.items()
        files.append((path, collection, objects))
        (entities if collection == "entities" else relationships).extend(objects)
    summary = json.loads((root / "summary.json").read_text())
    return {"entities": entities, "relationships": relationships, "files": files, "summary": summary}


def snapshot_of(output: dict) -> dict:
    """A deterministic, readable view of a run: objects sorted by key, raw data and timings left out."""

    def strip(obj: dict) -> dict:
        return {k: v for k, v in sorted(obj.items()) if k != "_rawData"}

    summary = json.loads(json.dumps(output["summary"]))
    for step in summary["integrationStepResults"]:
        for name in VOLATILE_STEP_FIELDS:
            step.pop(name, None)
    return {
        "entities": [strip(e) for e in sorted(output["entities"], key=lambda e: e["_key"])],
        "relationships": [strip(r) for r in sorted(output["relationships"], key=lambda r: r["_key"])],
        "summary": summary,
    }


def compare_snapshot(actual: dict, path: Path, update: bool) -> None:
    text = json.dumps(actual, indent=2, sort_keys=False, ensure_ascii=False) + "\n"
    if update or not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    expected = json.loads(path.read_text())
    assert actual == expected, f"graph differs from {path}; rerun with ETL_UPDATE_SNAPSHOTS=1 to accept"


def conformance_problems(plan: Plan, output: dict, *, all_types_expected: bool = True) -> list[str]:
    """Everything that would make JupiterOne reject or misread this output."""
    problems = []
    declared_entities = {e.type: e for s in plan.steps for e in s.entities}
    declared_relationships = {r.type for s in plan.steps for r in (*s.relationships, *s.mapped_relationships)}
    keys: set[str] = set()
    entity_keys = {e["_key"] for e in output["entities"]}

    for path, _collection, objects in output["files"]:
        if len(objects) > 500:
            problems.append(f"{path}: {len(objects)} objects (> 500)")
        if len({o["_type"] for o in objects}) != 1:
            problems.append(f"{path}: more than one _type in a file")

    for entity in output["entities"]:
        key = entity["_key"]
        if key in keys:
            problems.append(f"duplicate _key {key}")
        keys.add(key)
        if entity["_type"] not in declared_entities:
            problems.append(f"{key}: undeclared entity type {entity['_type']}")
        if len(key) < 10 or len(entity["_type"]) < 3:
            problems.append(f"{key}: _key or _type too short")
        if not isinstance(entity["_class"], list) or not entity["_class"]:
            problems.append(f"{key}: _class is not a non-empty list")
        for name in ("name", "displayName"):
            if not isinstance(entity.get(name), str):
                problems.append(f"{key}: missing {name}")
        for class_name in entity["_class"]:
            for name, allowed in datamodel.CLASS_REQUIRED.get(class_name, {}).items():
                if name in entity and datamodel.json_type(entity[name]) not in allowed:
                    problems.append(f"{key}: {name} has the wrong type")
                elif name not in entity and "null" not in allowed:
                    problems.append(f"{key}: missing {class_name} property {name}")
        for name, value in entity.items():
            if name == "_rawData":
                if value != [] and (not isinstance(value, list) or value[0].get("name") != "default"):
                    problems.append(f"{key}: malformed _rawData")
                continue
            if isinstance(value, dict) or (isinstance(value, list) and any(isinstance(v, (dict, list)) for v in value)):
                problems.append(f"{key}: property {name} is not a primitive or an array of primitives")
            if name.endswith("On") and not isinstance(value, int):
                problems.append(f"{key}: {name} is not epoch milliseconds")

    for relationship in output["relationships"]:
        key = relationship["_key"]
        if key in keys:
            problems.append(f"duplicate _key {key}")
        keys.add(key)
        if relationship["_type"] not in declared_relationships:
            problems.append(f"{key}: undeclared relationship type {relationship['_type']}")
        if relationship["_class"] not in datamodel.RELATIONSHIP_CLASSES:
            problems.append(f"{key}: unknown class {relationship['_class']}")
        if "_mapping" in relationship:
            mapping = relationship["_mapping"]
            if mapping["sourceEntityKey"] not in entity_keys:
                problems.append(f"{key}: mapped source {mapping['sourceEntityKey']} does not exist")
            for group in mapping["targetFilterKeys"]:
                if any(k not in mapping["targetEntity"] for k in group):
                    problems.append(f"{key}: a filter key is missing from targetEntity")
        else:
            for end in ("_fromEntityKey", "_toEntityKey"):
                if relationship[end] not in entity_keys:
                    problems.append(f"{key}: {end} {relationship[end]} does not exist")

    if all_types_expected:
        produced = {o["_type"] for o in output["entities"] + output["relationships"]}
        for declared in sorted(set(declared_entities) | declared_relationships):
            if declared not in produced:
                problems.append(f"declared type {declared} was not produced")
    return problems
