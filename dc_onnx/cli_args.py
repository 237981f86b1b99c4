"""argparse arguments generated from the option dataclasses of `dc_onnx.options`, and back.

Flags, defaults, choices and help come from the fields and their `option(...)` metadata;
each value is checked by the field's own `check` while parsing, so a bad value is a usage
error (exit 2) that names the option.
"""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from dc_onnx.options import OptionGroup, parse_input_shapes

_PREFIX = "options."


def _base_type(hint: Any) -> Any:
    """`float | None` -> float; Literal and plain types unchanged."""
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        kept = [a for a in typing.get_args(hint) if a is not type(None)]
        return kept[0] if len(kept) == 1 else str
    return hint


def _parser_of(f: dataclasses.Field[Any], hint: Any) -> Callable[[str], Any]:
    """The argparse `type`: parse the text, then apply the field's check."""
    parse = f.metadata.get("parse")
    base = _base_type(hint)
    if parse is None:
        parse = str if typing.get_origin(base) is typing.Literal else base
    check = f.metadata.get("check")

    def convert(text: str) -> Any:
        try:
            value = parse(text)
        except ValueError as e:
            custom = f.metadata.get("parse") is not None
            reason = str(e) if custom else f"expected {getattr(parse, '__name__', 'a value')}"
            raise argparse.ArgumentTypeError(f"{reason}, got '{text}'") from None
        if check is not None:
            try:
                check(f.name, value)
            except ValueError as e:
                raise argparse.ArgumentTypeError(str(e)) from None
        return value

    convert.__name__ = f.name
    return convert


def _describe_default(value: Any) -> str:
    if value is None or value is False or (isinstance(value, Mapping) and not value):
        return ""
    return f" (default {value})"


def _add_field(
    target: Any, f: dataclasses.Field[Any], hint: Any, dest: str, default: Any,
    flag: str | None = None, help: str | None = None, choices: Sequence[str] | None = None,
) -> None:  # fmt: skip
    flag = flag or f.metadata.get("flag") or "--" + f.name.replace("_", "-")
    text = (help or f.metadata["help"]) + _describe_default(default)
    if _base_type(hint) is bool:
        target.add_argument(flag, dest=dest, action="store_true", default=default, help=text)
        return
    base = _base_type(hint)
    if typing.get_origin(base) is typing.Literal:
        choices = typing.get_args(base)
    metavar = f.metadata.get("metavar") or flag.lstrip("-").replace("-", "_").upper()
    target.add_argument(
        flag, dest=dest, type=_parser_of(f, hint), default=default, choices=choices,
        metavar=None if choices else metavar, help=text,
    )  # fmt: skip


def _cli_fields(cls: type) -> list[tuple[dataclasses.Field[Any], Any]]:
    hints = typing.get_type_hints(cls)
    return [(f, hints[f.name]) for f in dataclasses.fields(cls)]


def add_options(
    parser: argparse.ArgumentParser, cls: type, choices: Mapping[str, Sequence[str]] | None = None
) -> None:
    """Add a flag for every field of `cls` with help text; one argument group per group.

    `choices` names the allowed values of fields whose set lives elsewhere (the recipes).
    """
    defaults = cls()
    for f, hint in _cli_fields(cls):
        default = getattr(defaults, f.name)
        if not isinstance(default, OptionGroup):
            if f.metadata.get("help"):
                allowed = (choices or {}).get(f.name)
                _add_field(parser, f, hint, _PREFIX + f.name, default, choices=allowed)
            continue
        section = parser.add_argument_group(f.metadata["title"])
        prefix = f.metadata.get("prefix", "")
        for sub, sub_hint in _cli_fields(type(default)):
            if not sub.metadata.get("help") or (prefix and not sub.metadata.get("per_phase")):
                continue
            flag = sub.metadata.get("flag") or "--" + prefix + sub.name.replace("_", "-")
            help = f.metadata.get("helps", {}).get(sub.name)
            dest = f"{_PREFIX}{f.name}.{sub.name}"
            _add_field(section, sub, sub_hint, dest, getattr(default, sub.name), flag, help)


def options_from_args(args: argparse.Namespace, cls: type) -> Any:
    """The `cls` instance the parsed flags describe (fields without a flag keep defaults)."""
    given = {
        k[len(_PREFIX) :]: v for k, v in vars(args).items() if k.startswith(_PREFIX)
    }  # fmt: skip
    defaults = cls()
    values: dict[str, Any] = {}
    groups: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        default: Any = getattr(defaults, f.name)
        if not isinstance(default, OptionGroup):
            if f.name in given:
                values[f.name] = given[f.name]
            continue
        own = {s.name: given[f"{f.name}.{s.name}"] for s in dataclasses.fields(default)
               if f"{f.name}.{s.name}" in given}  # fmt: skip
        shared = f.metadata.get("shares")
        if shared:  # the fields without a flag of their own follow the shared group
            own = {**dataclasses.asdict(groups[shared]), **own}
        groups[f.name] = values[f.name] = dataclasses.replace(default, **own)
    return cls(**values)


def positive_int(text: str) -> int:
    """argparse type for counts (batch sizes, repeats, threads): an integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got '{text}'")
    return value


def positive_ints(text: str) -> list[int]:
    """argparse type for B,B,...: positive integers, at least one."""
    try:
        values = [int(v) for v in text.split(",") if v]
    except ValueError:
        values = []
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected positive batch sizes like 1,8,64, got '{text}'")
    return values


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a positive number, got '{text}'")
    return value


def input_shapes(text: str) -> dict[str, list[int]]:
    """argparse type for 'NAME=D0,D1,... ...' (--input-shape of verify and bench)."""
    try:
        return parse_input_shapes(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


__all__: Sequence[str] = [
    "add_options", "input_shapes", "options_from_args", "positive_float", "positive_int",
    "positive_ints",
]  # fmt: skip
