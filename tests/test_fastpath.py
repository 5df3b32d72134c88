"""The compiled entity-property code agrees with evaluating each property on its own.

``engine.pipeline.properties`` turns a rule's properties into generated Python (shared prefix
lookups, direct searches, repeated expressions). These tests build entities from
arbitrary records, including the wrong shapes real APIs send, and compare every entity
and every warning with a plain property-by-property evaluation.
"""

from __future__ import annotations

from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from engine.lang.functions import jmespath_options
from engine.pipeline.build import GraphBuilder, Notes, as_key, describe, evaluate, property_value
from engine.pipeline.check import KeyIndex
from engine.pipeline.compile import compile_mapping
from engine.pipeline.load import load_mapping_text

MAPPING = """\
version: 1
integration: {id: acme, name: Acme}
config:
  token: {secret: true}
sources:
  api: {base_url: http://unused.invalid}
steps:
  - id: things
    name: Things
    request: {path: /things}
    records: items
    entities:
      - resource: Thing
        type: acme_thing
        class: Record
        key: "acme-thing:{{ record.id }}"
        properties:
          name: name
          displayName: name
          owner: owner.name
          ownerEmail: owner.email
          ownerCountry: owner.address.country
          ownerCity: owner.address.city
          deepest: owner.address.geo.lat
          labels: labels
          upper: upper(name)
          labelCount: length(labels)
          firstLabel: labels[0]
          sameAsOwner: owner.name
          greeting: "Hello {{ record.name }}"
          fixed: 7
      - resource: Part
        type: acme_part
        class: Record
        for_each: parts
        key: "acme-part:{{ item.id }}"
        properties:
          name: name
          size: spec.size
          kind: upper(spec.kind)
"""

PLAN = compile_mapping(load_mapping_text(MAPPING, "acme.yaml"), Path("."))
STEP = PLAN.steps[0]

scalars = st.one_of(st.none(), st.booleans(), st.integers(-5, 5), st.sampled_from(["a", "b", "x y", ""]))
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.dictionaries(
            st.sampled_from(
                ["id", "name", "email", "address", "city", "country", "geo", "lat", "size", "kind", "spec"]
            ),
            inner,
            max_size=4,
        ),
    ),
    max_leaves=8,
)
field_names = ["id", "name", "owner", "labels", "parts", "spec"]
records = st.fixed_dictionaries({"id": st.integers(1, 9)}, optional=dict.fromkeys(field_names[1:], values))


def builder() -> GraphBuilder:
    return GraphBuilder(
        STEP,
        config={"token": "t"},
        options=jmespath_options({"token": "t"}, 0),
        index=KeyIndex(),
        instance_tags={},
        now=0,
    )


def reference_properties(spec, scope, notes: Notes, prefix: str) -> dict | None:
    """Each property on its own, as the mapping format documents it (None: no key, no entity)."""
    if as_key(evaluate(spec.key, scope, notes, f"{prefix}.key")) is None:
        return None
    out = {}
    first_with_source: dict[str, str] = {}
    for name, value in spec.properties:
        earlier = first_with_source.setdefault(repr(value.source), name)
        if earlier != name:  # the same expression again: its value, and its warning only once
            if earlier in out:
                out[name] = out[earlier]
            continue
        path = f"{prefix}.properties.{name}"
        try:
            result = value.evaluate(scope)
        except Exception as exc:
            notes.add(path, describe(exc))
            continue
        result = property_value(result, notes, path)
        if result is not None:
            out[name] = result
    return out


def expected(record) -> tuple[list[dict], list[str]]:
    """Entity properties and warnings computed without the generated code."""
    graph_builder = builder()
    warnings: list[str] = []
    notes = Notes("record 1", warnings)
    scope = graph_builder.scope(record)
    thing, part = STEP.entities
    entities = [reference_properties(thing, scope, notes, "entities[0]")]
    for number, item_scope in enumerate(graph_builder.item_scopes(part.for_each, scope, notes, "entities[1]")):
        entities.append(reference_properties(part, item_scope, notes, f"entities[1] item {number}"))
    return [entity for entity in entities if entity is not None], warnings


def actual(record) -> tuple[list[dict], list[str]]:
    built = builder().build(record, "record 1")
    return [{k: v for k, v in entity.items() if not k.startswith("_")} for entity in built.entities], built.warnings


def normalise(entities: list[dict]) -> list[dict]:
    """displayName defaults to name when not mapped; the reference does not apply defaults."""
    out = []
    for entity in entities:
        entity = dict(entity)
        if "displayName" in entity and entity.get("displayName") == entity.get("name"):
            entity.pop("displayName")
        out.append(entity)
    return out


@settings(max_examples=300, deadline=None)
@given(records)
def test_generated_code_matches_property_by_property_evaluation(record):
    want_entities, want_warnings = expected(record)
    got_entities, got_warnings = actual(record)
    assert normalise(got_entities) == normalise(want_entities)
    assert got_warnings == want_warnings


def test_shared_prefix_and_wrong_shapes():
    record = {
        "id": 1,
        "name": "widget",
        "owner": {"name": "Ann", "address": "not an object"},
        "labels": ["a", None, "b"],
        "parts": [{"id": 2, "name": "p", "spec": {"kind": "bolt", "size": 3}}, {"id": 3, "spec": "junk"}],
    }
    entities, warnings = actual(record)
    thing, bolt, junk = entities
    assert thing == {
        "name": "widget",
        "displayName": "widget",
        "owner": "Ann",
        "sameAsOwner": "Ann",
        "labels": ["a", "b"],
        "upper": "WIDGET",
        "labelCount": 3,
        "firstLabel": "a",
        "greeting": "Hello widget",
        "fixed": 7,
    }
    assert bolt == {"name": "p", "displayName": "p", "size": 3, "kind": "BOLT"}
    assert junk == {}
    assert warnings == []


def test_errors_name_the_property_and_the_item():
    record = {"id": 1, "name": 5, "parts": [{"id": 2, "spec": {"kind": 3, "size": {"deep": 1}}}]}
    entities, warnings = actual(record)
    assert entities[0]["name"] == 5
    assert any(w.startswith("record 1: entities[0].properties.upper: ") for w in warnings), warnings
    assert any(w.startswith("record 1: entities[1] item 0.properties.kind: ") for w in warnings), warnings
    assert (
        "record 1: entities[1] item 0.properties.size: an object cannot be an entity property "
        "(map its fields, or keep it in _rawData); dropped"
    ) in warnings
