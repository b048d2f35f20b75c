"""Typed records and their canonical JSON form, in both directions, every field checked on the way in.

A record is a frozen dataclass. Its JSON keys are its field names in
camelCase (PopEF's spelling: ``tensor_info`` is ``tensorInfo``); a field may
declare a lower bound (``field(metadata={"min": 0})``) or its allowed values
(``{"choices": (...)}``). Reading checks each
value against the field's type (str, int, float, bool, None, tuples, lists,
string-keyed dicts and nested records) and bound, and names the field's path
in the document when it does not fit, so a reader of untrusted bytes never
meets a value of the wrong type later.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import re
import types
import typing
from typing import Any

#: The deepest nesting a document may have; deeper ones are refused before they are parsed.
MAX_DEPTH = 32


class RecordError(ValueError):
    """A document does not fit its record type: ``path`` names the field."""

    def __init__(self, path: str, problem: str):
        self.path = path
        super().__init__(f"{path}: {problem}")


def camel(name: str) -> str:
    """``tensor_info`` -> ``tensorInfo``."""
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)


def to_json(record: Any) -> Any:
    """The JSON-ready form of a record (or of a value inside one)."""
    if dataclasses.is_dataclass(record):
        return {camel(f.name): to_json(getattr(record, f.name)) for f in dataclasses.fields(record)}
    if isinstance(record, (tuple, list)):
        return [to_json(v) for v in record]
    if isinstance(record, dict):
        return {k: to_json(v) for k, v in record.items()}
    return record


def dumps(record: Any) -> bytes:
    """Canonical JSON bytes: sorted keys, no whitespace, so equal records give equal bytes."""
    return json.dumps(to_json(record), sort_keys=True, separators=(",", ":")).encode("utf-8")


def loads(kind: type, payload: bytes | memoryview, where: str) -> Any:
    """Parse ``payload`` as a ``kind`` record.

    Raises:
        RecordError: the bytes are not UTF-8 JSON, nest deeper than ``MAX_DEPTH``, or do not fit ``kind``.
    """
    text = bytes(payload)
    try:
        decoded = text.decode("utf-8")
    except UnicodeDecodeError as e:
        raise RecordError(where, f"not UTF-8 text ({e.reason} at byte {e.start})") from None
    depth = _max_depth(decoded)
    if depth > MAX_DEPTH:
        raise RecordError(where, f"nested {depth} levels deep; a record nests at most {MAX_DEPTH}")
    try:
        data = json.loads(decoded)
    except ValueError as e:
        raise RecordError(where, f"not JSON: {e}") from None
    return from_json(kind, data, where)


def from_json(kind: Any, data: Any, where: str) -> Any:
    """``data`` (parsed JSON) as a value of type ``kind``, checked; ``where`` names it in errors."""
    return _decoder(kind)(data, where)


Decoder = typing.Callable[[Any, str], Any]


@functools.cache
def _decoder(kind: Any) -> Decoder:
    """The checking decoder of ``kind``, planned once per type: an artifact's metadata holds thousands of
    records, and reflecting on each one's type every time cost more than reading the file."""
    if dataclasses.is_dataclass(kind):
        return _record_decoder(kind)
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if origin in (types.UnionType, typing.Union):
        (inner,) = [a for a in args if a is not type(None)]
        optional, decode_inner = type(None) in args, _decoder(inner)

        def union(data: Any, where: str) -> Any:
            return None if data is None and optional else decode_inner(data, where)

        return union
    if origin in (tuple, list):
        item, make = _decoder(args[0]), tuple if origin is tuple else list

        def sequence(data: Any, where: str) -> Any:
            if not isinstance(data, list):
                raise RecordError(where, f"expected a list, received {_kind(data)}")
            return make(item(v, f"{where}[{i}]") for i, v in enumerate(data))

        return sequence
    if origin is dict:
        value = _decoder(args[1])

        def mapping(data: Any, where: str) -> Any:
            if not isinstance(data, dict):
                raise RecordError(where, f"expected an object, received {_kind(data)}")
            return {k: value(v, f"{where}.{k}") for k, v in data.items()}

        return mapping
    if kind is Any:
        return lambda data, where: data
    name = _NAMES.get(kind, getattr(kind, "__name__", str(kind)))

    def scalar(data: Any, where: str) -> Any:
        if kind is float and isinstance(data, int) and not isinstance(data, bool):
            return float(data)
        if not isinstance(data, kind) or (kind is int and isinstance(data, bool)):
            raise RecordError(where, f"expected {name}, received {_kind(data)}")
        return data

    return scalar


def _record_decoder(kind: type) -> Decoder:
    hints = typing.get_type_hints(kind)
    plan = [(f.name, camel(f.name), _decoder(hints[f.name]),
             f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING,
             f.metadata.get("min"), f.metadata.get("choices")) for f in dataclasses.fields(kind)]

    def record(data: Any, where: str) -> Any:
        if not isinstance(data, dict):
            raise RecordError(where, f"expected an object, received {_kind(data)}")
        values = {}
        for name, key, decode, required, bound, choices in plan:
            if key not in data:
                if required:
                    raise RecordError(f"{where}.{key}", "missing")
                continue
            value = decode(data[key], f"{where}.{key}")
            if bound is not None:
                _check_min(value, bound, f"{where}.{key}")
            if choices is not None and value not in choices:
                allowed = ", ".join(map(repr, choices))
                raise RecordError(f"{where}.{key}", f"must be one of {allowed}, received {value!r}")
            values[name] = value
        return kind(**values)

    return record


_NAMES = {str: "a string", int: "an integer", float: "a number", bool: "true or false"}


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    text = json.dumps(value)
    return f"{type(value).__name__} {text[:40]}{'…' if len(text) > 40 else ''}"


def _check_min(value: Any, bound: int, where: str) -> None:
    values = value if isinstance(value, tuple) else (value,)
    for v in values:
        if isinstance(v, (int, float)) and v < bound:
            raise RecordError(where, f"must be at least {bound}, received {v}")


def _max_depth(text: str) -> int:
    """How deeply ``text``'s JSON arrays and objects nest, counted outside strings (json's own parser
    recurses once per level and would exhaust Python's stack on a forged document)."""
    depth = deepest = 0
    for bracket in _BRACKETS.findall(_STRINGS.sub("", text)):
        depth += 1 if bracket in "[{" else -1
        deepest = max(deepest, depth)
    return deepest


_STRINGS = re.compile(r'"(?:[^"\\]|\\.)*"')
_BRACKETS = re.compile(r"[\[\]{}]")
