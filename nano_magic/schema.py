"""Structured output: a pydantic model, TypedDict, dataclass or JSON Schema dict as a strict schema, and parsing answers into it."""

from __future__ import annotations

import copy
import dataclasses
import json
import re
import sys
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Mapping

from .jsontext import load_json

if TYPE_CHECKING:
    from pydantic import TypeAdapter

__all__ = ["OutputSchema", "SchemaError", "drop_absent", "pydantic_ready", "strict_shape"]

# Keys whose value is one schema, a list of schemas, or a mapping of names to schemas.
_ONE = ("items", "additionalProperties", "not", "contains", "if", "then", "else")
_MANY = ("anyOf", "allOf", "oneOf", "prefixItems")
_NAMED = ("properties", "$defs", "definitions", "patternProperties")
_NULL = {"type": "null"}


class SchemaError(ValueError):
    """An answer that does not fit its schema, or an object that cannot be a schema; the message names the first problem."""


def strict_shape(schema: Mapping[str, Any]) -> tuple[dict[str, Any], bool]:
    """A copy shaped for strict mode, and whether strict mode can express it.

    Every object gets `additionalProperties: false` and lists all its properties as required; a property
    that was optional becomes a union with null. Free-form mappings (`dict[str, X]`) have no strict form,
    so they are kept as they are and the flag comes back False.
    """
    faithful = [True]
    return _shape(copy.deepcopy(dict(schema)), faithful), faithful[0]


def _shape(node: Any, faithful: list[bool]) -> Any:
    if not isinstance(node, dict):
        return node
    node.pop("default", None)  # strict mode fills every field, so a default means nothing to the model
    for key in _ONE:
        if isinstance(node.get(key), dict):
            node[key] = _shape(node[key], faithful)
    for key in _MANY:
        if isinstance(node.get(key), list):
            node[key] = [_shape(item, faithful) for item in node[key]]
    for key in _NAMED:
        if isinstance(node.get(key), dict):
            node[key] = {name: _shape(item, faithful) for name, item in node[key].items()}
    if node.get("type") == "object" or "properties" in node:
        if node.get("additionalProperties") not in (None, False) or "patternProperties" in node:
            faithful[0] = False
            return node
        properties = node.setdefault("properties", {})
        required = set(node.get("required", []))
        for name in properties:
            if name not in required:
                properties[name] = _nullable(properties[name])
        node["required"] = list(properties)
        node["additionalProperties"] = False
    return node


def _nullable(schema: dict[str, Any]) -> dict[str, Any]:
    if _allows_null(schema):
        return schema
    return {"anyOf": [schema, dict(_NULL)]}


def _allows_null(schema: Any) -> bool:
    if not isinstance(schema, dict):
        return False
    kind = schema.get("type")
    if kind == "null" or (isinstance(kind, list) and "null" in kind):
        return True
    return any(_allows_null(option) for option in schema.get("anyOf", []) + schema.get("oneOf", []))


@dataclass(frozen=True)
class OutputSchema:
    """The shape an answer must take: request fields for both APIs, and `parse` for the answer."""

    name: str
    schema: dict[str, Any]
    strict: bool = True
    original: dict[str, Any] = field(default_factory=dict, repr=False)
    target: TypeAdapter[Any] | None = field(default=None, repr=False)
    source: type | None = field(default=None, repr=False)  # the class the schema was made from

    @classmethod
    def from_object(cls, obj: Any, name: str | None = None) -> OutputSchema:
        """From a pydantic model, TypedDict, dataclass or JSON Schema dict; SchemaError if it is none of them."""
        if isinstance(obj, OutputSchema):
            return obj
        if isinstance(obj, Mapping):
            original = dict(obj)
            if original.get("type") != "object" and "properties" not in original:
                raise SchemaError("a JSON Schema for an answer must describe an object (\"type\": \"object\").")
            target = None
            title = name or original.get("title") or "answer"
        elif _is_typed_class(obj):
            from pydantic import PydanticSchemaGenerationError, TypeAdapter

            try:
                target = TypeAdapter(pydantic_ready(obj))
                original = target.json_schema()
            except (PydanticSchemaGenerationError, TypeError) as exc:
                raise SchemaError(f"{_name(obj)} cannot be described as JSON Schema ({_first_line(exc)}).") from None
            title = name or obj.__name__
        else:
            raise SchemaError(f"{_name(obj)} is not a pydantic model, TypedDict, dataclass or JSON Schema dict.")
        shaped, strict = strict_shape(original)
        return cls(_api_name(str(title)), shaped, strict, original, target, obj if target is not None else None)

    def chat_format(self) -> dict[str, Any]:
        """The Chat Completions `response_format` field."""
        return {"type": "json_schema", "json_schema": {"name": self.name, "schema": self.schema, "strict": self.strict}}

    def responses_format(self) -> dict[str, Any]:
        """The Responses API `text.format` field."""
        return {"type": "json_schema", "name": self.name, "schema": self.schema, "strict": self.strict}

    def fields(self) -> dict[str, str | None]:
        """Each top-level field with its JSON type (`string`, `integer`, `number`, `boolean`), or None when it is not one scalar type."""
        root = self.original
        properties = _resolve(root, root).get("properties") or {}
        return {name: _scalar_type(_resolve(sub, root), root) for name, sub in properties.items()}

    def python_types(self) -> dict[str, type]:
        """The top-level fields typed `datetime`, `date`, `Decimal` or an `Enum` (optional or not), which a table keeps as that type."""
        cls = self.source
        if cls is None:
            return {}
        import datetime
        import decimal
        import enum
        from typing import get_args, get_type_hints

        try:
            hints = {name: f.annotation for name, f in cls.model_fields.items()} if hasattr(cls, "model_fields") else get_type_hints(cls)
        except (NameError, TypeError):
            return {}
        found = {}
        for name, hint in hints.items():
            options = [a for a in (get_args(hint) or (hint,)) if a is not type(None)]
            kind = options[0] if len(options) == 1 else None
            if isinstance(kind, type) and issubclass(kind, (datetime.date, decimal.Decimal, enum.Enum)):
                found[name] = kind
        return found

    def dump(self, value: Any) -> Any:
        """A parsed answer as plain JSON values: a model, dataclass or TypedDict as a dict, enums and dates as their JSON form."""
        return value if self.target is None else self.target.dump_python(value, mode="json")

    def dump_python(self, value: Any) -> Any:
        """A parsed answer as Python values: dates, Decimals and enum members stay themselves."""
        return value if self.target is None else self.target.dump_python(value)

    def parse(self, text: str) -> Any:
        """The answer as a validated value: an instance of the model or dataclass, or a dict; SchemaError names the first problem."""
        try:
            value = load_json(text)
        except json.JSONDecodeError as exc:
            raise SchemaError(f"the answer is not valid JSON ({exc.msg} at line {exc.lineno}, column {exc.colno})") from None
        value = drop_absent(value, self.original)
        if self.target is not None:
            from pydantic import ValidationError

            try:
                return self.target.validate_python(value)
            except ValidationError as exc:
                first = exc.errors()[0]
                got = repr(first.get("input"))
                raise SchemaError(f"{_where(first['loc'])}: {first['msg']} (got {got if len(got) <= 40 else got[:39] + '…'})") from None
            except KeyboardInterrupt:
                raise
            except BaseException as exc:  # noqa: BLE001  # a validator of the user's raised something pydantic does not wrap (AttributeError, SystemExit…)
                raise SchemaError(f"its validator raised {type(exc).__name__}: {_first_line(exc)}") from None
        from jsonschema import validators
        from jsonschema.exceptions import best_match

        error = best_match(validators.validator_for(self.original)(self.original).iter_errors(value))
        if error is not None:
            raise SchemaError(f"{_where(error.absolute_path)}: {error.message}")
        return value


def drop_absent(value: Any, schema: Mapping[str, Any]) -> Any:
    """Remove the nulls that strict mode made the model write for optional fields that never allowed null."""
    return _drop_absent(value, schema, schema)


def _drop_absent(value: Any, schema: Any, root: Mapping[str, Any]) -> Any:
    schema = _resolve(schema, root)
    if isinstance(value, dict) and isinstance(schema.get("properties"), dict):
        required = set(schema.get("required", []))
        kept = {}
        for key, item in value.items():
            sub = schema["properties"].get(key)
            if item is None and key not in required and sub is not None and not _allows_null(_resolve(sub, root)):
                continue
            kept[key] = _drop_absent(item, sub, root) if sub is not None else item
        return kept
    if isinstance(value, list) and isinstance(schema.get("items"), dict):
        return [_drop_absent(item, schema["items"], root) for item in value]
    return value


def _scalar_type(schema: Mapping[str, Any], root: Mapping[str, Any]) -> str | None:
    """The one scalar JSON type a schema allows besides null, or None."""
    kinds = schema.get("type")
    if isinstance(kinds, list):
        kinds = [k for k in kinds if k != "null"]
        kinds = kinds[0] if len(kinds) == 1 else None
    elif kinds is None and isinstance(schema.get("anyOf"), list):
        options = [_resolve(option, root) for option in schema["anyOf"] if option != _NULL]
        kinds = _scalar_type(options[0], root) if len(options) == 1 else None
    return kinds if kinds in ("string", "integer", "number", "boolean") else None


def _resolve(schema: Any, root: Mapping[str, Any]) -> dict[str, Any]:
    """A local `$ref` (`#/$defs/Name`) followed to its schema."""
    seen = 0
    while isinstance(schema, dict) and isinstance(schema.get("$ref"), str) and schema["$ref"].startswith("#/") and seen < 32:
        target: Any = root
        for part in schema["$ref"][2:].split("/"):
            target = target.get(part, {}) if isinstance(target, dict) else {}
        schema, seen = target, seen + 1
    return schema if isinstance(schema, dict) else {}


def pydantic_ready(cls: Any) -> Any:
    """The type itself, or for a `typing.TypedDict` on Python < 3.12 the same TypedDict rebuilt as pydantic needs it."""
    if not isinstance(cls, type) or not hasattr(cls, "__required_keys__") or sys.version_info >= (3, 12):
        return cls
    from typing import get_origin, get_type_hints

    import typing_extensions

    # With string annotations Python 3.11 cannot see NotRequired[...] itself, so the hints are read again here.
    hints = get_type_hints(cls, include_extras=True)
    marked = (typing_extensions.NotRequired, typing_extensions.Required)
    fields = {k: v if k in cls.__required_keys__ or get_origin(v) in marked else typing_extensions.NotRequired[v] for k, v in hints.items()}
    rebuilt = typing_extensions.TypedDict(cls.__name__, fields)  # type: ignore[misc]
    rebuilt.__doc__ = cls.__doc__
    return rebuilt


def _is_typed_class(obj: Any) -> bool:
    if not isinstance(obj, type):
        return False
    if dataclasses.is_dataclass(obj) or hasattr(obj, "__required_keys__"):  # a dataclass or a TypedDict
        return True
    return any(base.__name__ == "BaseModel" and base.__module__.startswith("pydantic") for base in obj.__mro__)


def _api_name(title: str) -> str:
    """A schema name the APIs accept: letters, digits, `_` and `-`, at most 64."""
    return re.sub(r"[^A-Za-z0-9_-]+", "_", title).strip("_")[:64] or "answer"


def _name(obj: Any) -> str:
    return getattr(obj, "__name__", None) or type(obj).__name__


def _where(loc: Any) -> str:
    path = ".".join(str(part) for part in loc)
    return path or "the answer"


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]
