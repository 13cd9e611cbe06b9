"""Notebook functions offered to the model: JSON Schema from signatures and docstrings, and running the calls."""

from __future__ import annotations

import inspect
import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Iterable, Mapping

from .bounded import bounded_text
from .jsontext import load_json
from .loops import on_worker_loop
from .schema import drop_absent, pydantic_ready, strict_shape

if TYPE_CHECKING:
    from pydantic import BaseModel

__all__ = ["Tool", "ToolCall", "ToolError", "Toolbox", "tools_from_names", "RESULT_CHARS"]

RESULT_CHARS = 4000


class ToolError(ValueError):
    """A name that is not a function, or a function that cannot be described to the model."""


@dataclass
class ToolCall:
    """One call the model asked for, and what it got back."""

    id: str
    name: str
    arguments: str
    result: str = ""
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready copy, as turns keep it."""
        return {"id": self.id, "name": self.name, "arguments": self.arguments, "result": self.result, "error": self.error}


@dataclass(frozen=True)
class Tool:
    """A Python callable with the JSON Schema of its arguments."""

    name: str
    function: Callable[..., Any] = field(repr=False)
    description: str
    parameters: dict[str, Any]
    strict: bool
    arguments: type[BaseModel] = field(repr=False)  # validates the arguments
    aliases: dict[str, str] = field(repr=False)  # argument name -> field name of that model
    original: dict[str, Any] = field(repr=False)  # the schema before strict shaping
    positional: tuple[str, ...] = field(default=(), repr=False)  # positional-only parameters, as builtins have

    @classmethod
    def from_callable(cls, function: Callable[..., Any], name: str | None = None) -> Tool:
        """Describe `function`; ToolError when its signature cannot be described."""
        from docstring_parser import parse as parse_docstring
        from pydantic import (
            ConfigDict,
            Field,
            PydanticSchemaGenerationError,
            PydanticUserError,
            create_model,
        )
        from pydantic.json_schema import GenerateJsonSchema

        class Untitled(GenerateJsonSchema):
            """No `title` on each property: the name says it, and every request pays for the tokens."""

            def field_title_should_be_set(self, schema: Any) -> bool:
                return False

        name = name or getattr(function, "__name__", None) or type(function).__name__
        if not callable(function):
            raise ToolError(f"{name} is not a function.")
        try:
            signature = inspect.signature(function)
            hints = _hints(function)
        except (TypeError, ValueError, NameError) as exc:
            raise ToolError(f"{name} cannot be described: {exc}.") from None
        doc = parse_docstring(inspect.getdoc(function) or "")
        notes = {p.arg_name: p.description for p in doc.params if p.description}
        fields: dict[str, Any] = {}
        aliases: dict[str, str] = {}
        annotated = True
        for position, (arg, param) in enumerate(signature.parameters.items()):
            if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
                raise ToolError(f"{name} takes *{arg}: a tool needs named parameters only.")
            annotation = hints.get(arg, param.annotation)
            if annotation is inspect.Parameter.empty:
                annotation, annotated = Any, False
            default = ... if param.default is inspect.Parameter.empty else param.default
            # Fields get neutral names with the parameter as alias, so that no parameter can clash with pydantic's own names.
            aliases[arg] = f"p{position}"
            fields[aliases[arg]] = (pydantic_ready(annotation), Field(default, alias=arg, description=notes.get(arg)))
        try:
            model = create_model(f"{name}_arguments", __config__=ConfigDict(extra="forbid"), **fields)
            schema = model.model_json_schema(schema_generator=Untitled)
        except (PydanticSchemaGenerationError, PydanticUserError, TypeError) as exc:
            raise ToolError(f"{name} cannot be described: {(str(exc).splitlines() or [''])[0]}") from None
        schema.pop("title", None)
        every_required = len(schema.get("required", [])) == len(fields)
        shaped, faithful = strict_shape(schema)
        strict = annotated and every_required and faithful
        description = "\n\n".join(p for p in (doc.short_description, doc.long_description) if p)
        positional = tuple(arg for arg, param in signature.parameters.items() if param.kind is param.POSITIONAL_ONLY)
        return cls(name, function, description, shaped if strict else schema, strict, model, aliases, schema, positional)

    def chat_spec(self) -> dict[str, Any]:
        """The tool in the Chat Completions `tools` list."""
        return {"type": "function", "function": self._function()}

    def responses_spec(self) -> dict[str, Any]:
        """The tool in the Responses API `tools` list."""
        return {"type": "function", **self._function()}

    def _function(self) -> dict[str, Any]:
        spec: dict[str, Any] = {"name": self.name}
        if self.description:
            spec["description"] = self.description
        return {**spec, "parameters": self.parameters, "strict": self.strict}

    def kwargs(self, arguments: str) -> dict[str, Any]:
        """The call's keyword arguments, validated; ValueError names the first problem."""
        from pydantic import ValidationError

        try:
            given = load_json(arguments or "{}")
        except json.JSONDecodeError as exc:
            raise ValueError(f"the arguments are not valid JSON ({exc.msg} at column {exc.colno})") from None
        if not isinstance(given, dict):
            raise ValueError("the arguments must be a JSON object")
        if self.strict:  # strict mode makes the model write null for the nested fields it leaves out
            given = drop_absent(given, self.original)
        try:
            checked = self.arguments.model_validate(given)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(part) for part in first["loc"]) or "arguments"
            raise ValueError(f"the arguments do not fit the schema ({where}: {first['msg']})") from None
        return {arg: getattr(checked, field_name) for arg, field_name in self.aliases.items()}


def _hints(function: Callable[..., Any]) -> dict[str, Any]:
    from typing import get_type_hints

    target = function if inspect.isfunction(function) or inspect.ismethod(function) else getattr(function, "__call__", function)  # noqa: B004 (its hints, not whether it is callable)
    return get_type_hints(target, include_extras=True)


class Toolbox:
    """The tools a cell offers, and the running of the calls the model makes."""

    def __init__(self, tools: Iterable[Tool | Callable[..., Any]] = (), result_chars: int = RESULT_CHARS) -> None:
        self.tools = {t.name: t for t in (t if isinstance(t, Tool) else Tool.from_callable(t) for t in tools)}
        self.result_chars = result_chars

    def __bool__(self) -> bool:
        return bool(self.tools)

    def specs(self, api: str) -> list[dict[str, Any]]:
        """The `tools` request field."""
        return [t.responses_spec() if api == "responses" else t.chat_spec() for t in self.tools.values()]

    def run(self, call: ToolCall) -> ToolCall:
        """Run one call in this thread; failures become the result the model reads, so that it can recover."""
        tool = self.tools.get(call.name)
        if tool is None:
            offered = ", ".join(self.tools) or "none"
            return self._failed(call, f"there is no tool named {call.name!r}; the tools are: {offered}")
        try:
            kwargs = tool.kwargs(call.arguments)
        except ValueError as exc:
            return self._failed(call, str(exc))
        try:
            positional = [kwargs.pop(arg) for arg in tool.positional]
            text, cut = self._text(tool.function(*positional, **kwargs))
        except KeyboardInterrupt:  # Ctrl-C stops the cell
            raise
        except BaseException as exc:  # noqa: BLE001  # the tool's own failure (SystemExit too) goes back to the model, as does a failing repr
            return self._failed(call, _reason(exc))
        call.result, call.error = self._noted(text, cut), None
        return call

    def _text(self, value: Any) -> tuple[str, bool]:
        """The result as text up to the cut: awaited first when it is a coroutine, read only that far when it is an iterator."""
        if inspect.isawaitable(value) or inspect.isasyncgen(value):
            value = on_worker_loop(lambda: _settled(value, self.result_chars + 1), name="nano-tool")
        return bounded_text(value, self.result_chars)

    def _failed(self, call: ToolCall, reason: str) -> ToolCall:
        call.error = reason
        text = f"Error: {reason}"
        call.result = self._noted(text[:self.result_chars], len(text) > self.result_chars)
        return call

    def _noted(self, text: str, cut: bool) -> str:
        return text + f"\n[cut: only the first {self.result_chars} characters of the result are shown]" if cut else text


def _reason(exc: BaseException) -> str:
    """`Type: message`, even when the exception's own `__str__` fails."""
    try:
        message = str(exc)
    except Exception:  # noqa: BLE001  # a hostile exception still names its type
        message = "(its message could not be shown)"
    return f"{type(exc).__name__}: {message}" if message else type(exc).__name__


async def _settled(value: Any, most: int) -> Any:
    """An awaited result, or an async iterator's first `most` items (each is at least one character of the text)."""
    if inspect.isasyncgen(value) or hasattr(value, "__anext__"):
        items = []
        async for item in value:
            items.append(item)
            if len(items) >= most:
                break
        if inspect.isasyncgen(value):
            await value.aclose()
        return items
    return await value


def tools_from_names(names: str, namespace: Mapping[str, Any]) -> list[Tool]:
    """The tools `--tools a,b.c` names in the user namespace; ToolError for a missing name or an indescribable callable."""
    found = []
    for name in (n.strip() for n in names.split(",")):
        if not name:
            continue
        head, *rest = name.split(".")
        if head not in namespace:
            raise ToolError(f"--tools: there is no function named {name!r}.")
        value = namespace[head]
        for part in rest:
            if not hasattr(value, part):
                raise ToolError(f"--tools: there is no function named {name!r}.")
            value = getattr(value, part)
        if not callable(value):
            raise ToolError(f"--tools: {name} is not a function.")
        found.append(Tool.from_callable(value, name.replace(".", "_")))
    return found
