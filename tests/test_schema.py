"""Structured output: strict-mode shaping of schemas, and answers parsed into the user's own types."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Literal, TypedDict

import pytest
from pydantic import BaseModel
from typing_extensions import NotRequired

from nano_magic.schema import OutputSchema, SchemaError, strict_shape


class Point(BaseModel):
    x: float
    y: float


class Shape(BaseModel):
    """A named polygon."""

    name: str
    kind: Literal["convex", "concave"]
    corners: list[Point]
    label: str | None = None
    sides: int = 3


@dataclass
class City:
    name: str
    population: int
    country: str = "unknown"


class Movie(TypedDict):
    title: str
    year: int
    rating: NotRequired[float]


def objects(schema: dict) -> list[dict]:
    """Every object schema inside `schema`, $defs included."""
    found = []
    if isinstance(schema, dict):
        if schema.get("type") == "object":
            found.append(schema)
        for value in schema.values():
            found += objects(value)
    elif isinstance(schema, list):
        for value in schema:
            found += objects(value)
    return found


def test_a_pydantic_model_is_shaped_for_strict_mode_with_its_nested_models() -> None:
    shape = OutputSchema.from_object(Shape)
    assert shape.name == "Shape" and shape.strict
    found = objects(shape.schema)
    assert len(found) == 2, "Shape and Point"
    for obj in found:
        assert obj["additionalProperties"] is False
        assert sorted(obj["required"]) == sorted(obj["properties"])
    props = shape.schema["properties"]
    assert props["kind"]["enum"] == ["convex", "concave"]
    assert {"type": "null"} in props["label"]["anyOf"]
    assert {"type": "null"} in props["sides"]["anyOf"], "a field with a default becomes nullable"
    assert "default" not in json.dumps(shape.schema)
    assert props["corners"]["items"] == {"$ref": "#/$defs/Point"}


def test_request_fields_for_both_apis() -> None:
    shape = OutputSchema.from_object(Shape)
    assert shape.chat_format() == {"type": "json_schema", "json_schema": {"name": "Shape", "schema": shape.schema, "strict": True}}
    assert shape.responses_format() == {"type": "json_schema", "name": "Shape", "schema": shape.schema, "strict": True}


def test_a_model_answer_parses_into_an_instance_and_nulls_stand_for_defaults() -> None:
    shape = OutputSchema.from_object(Shape)
    value = shape.parse('{"name": "tri", "kind": "convex", "corners": [{"x": 0, "y": 1}], "label": null, "sides": null}')
    assert isinstance(value, Shape) and value.sides == 3 and value.label is None
    assert value.corners == [Point(x=0, y=1)]


def test_the_first_validation_problem_is_named() -> None:
    shape = OutputSchema.from_object(Shape)
    with pytest.raises(SchemaError, match=r"corners\.0\.y: Input should be a valid number"):
        shape.parse('{"name": "t", "kind": "convex", "corners": [{"x": 0, "y": "up"}], "label": null, "sides": 3}')
    with pytest.raises(SchemaError, match="kind: Input should be 'convex' or 'concave'"):
        shape.parse('{"name": "t", "kind": "round", "corners": [], "label": null, "sides": 3}')
    with pytest.raises(SchemaError, match="not valid JSON"):
        shape.parse('{"name": "t", ')


def test_a_dataclass_parses_into_an_instance() -> None:
    city = OutputSchema.from_object(City)
    assert city.schema["required"] == ["name", "population", "country"]
    assert city.parse('{"name": "Oslo", "population": 700000, "country": null}') == City("Oslo", 700000)


def test_a_typeddict_with_a_not_required_key() -> None:
    movie = OutputSchema.from_object(Movie)
    assert movie.schema["required"] == ["title", "year", "rating"]
    assert {"type": "null"} in movie.schema["properties"]["rating"]["anyOf"]
    assert movie.parse('{"title": "Heat", "year": 1995, "rating": null}') == {"title": "Heat", "year": 1995}
    assert movie.parse('{"title": "Heat", "year": 1995, "rating": 8.3}')["rating"] == 8.3


def test_a_json_schema_dict_is_shaped_and_validated() -> None:
    given = {"title": "reading list", "type": "object", "properties": {"books": {"type": "array", "items": {
        "type": "object", "properties": {"title": {"type": "string"}, "pages": {"type": "integer"}}, "required": ["title"]}}}}
    reading = OutputSchema.from_object(given)
    assert reading.name == "reading_list" and reading.strict
    item = reading.schema["properties"]["books"]["anyOf"][0]["items"]
    assert item["required"] == ["title", "pages"] and item["additionalProperties"] is False
    assert given["properties"]["books"]["items"]["required"] == ["title"], "the user's dict is left alone"
    assert reading.parse('{"books": [{"title": "Dune", "pages": null}]}') == {"books": [{"title": "Dune"}]}
    with pytest.raises(SchemaError, match=r"books\.0\.pages: 'many' is not of type 'integer'"):
        reading.parse('{"books": [{"title": "Dune", "pages": "many"}]}')


def test_free_form_mappings_have_no_strict_form() -> None:
    shaped, strict = strict_shape({"type": "object", "properties": {"counts": {"type": "object", "additionalProperties": {"type": "integer"}}}})
    assert not strict
    assert shaped["properties"]["counts"]["anyOf"][0]["additionalProperties"] == {"type": "integer"}


def test_nullable_fields_are_not_wrapped_twice() -> None:
    shaped, _ = strict_shape({"type": "object", "properties": {"a": {"type": ["string", "null"]}}})
    assert shaped["properties"]["a"] == {"type": ["string", "null"]}


@pytest.mark.parametrize("bad", [int, "Shape", 3, {"type": "array", "items": {}}])
def test_what_cannot_be_a_schema_says_so(bad) -> None:
    with pytest.raises(SchemaError):
        OutputSchema.from_object(bad)


def test_fields_name_each_top_level_scalar_type_for_table_columns() -> None:
    assert OutputSchema.from_object(Shape).fields() == {"name": "string", "kind": "string", "corners": None, "label": "string", "sides": "integer"}
    assert OutputSchema.from_object(City).fields() == {"name": "string", "population": "integer", "country": "string"}
    loose = {"type": "object", "properties": {"n": {"type": ["number", "null"]}, "any": {"type": ["string", "integer"]}}}
    assert OutputSchema.from_object(loose).fields() == {"n": "number", "any": None}
    shape = OutputSchema.from_object(Shape)
    value = shape.parse('{"name": "tri", "kind": "convex", "corners": [{"x": 0, "y": 1}], "label": null, "sides": 3}')
    assert shape.dump(value) == {"name": "tri", "kind": "convex", "corners": [{"x": 0.0, "y": 1.0}], "label": None, "sides": 3}
