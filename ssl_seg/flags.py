"""Command-line flags made from config dataclasses: each field is one `--kebab-name` flag with its type and help.

A field declares its help where it is defined, `noise_std: float = opt(0.1, "std of the input noise")`;
`add_config_flags` turns every field of a (nested) config dataclass into an argparse flag whose default
is "not given", so only the flags a user typed override a config (defaults, --config or a resumed run's).
"""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from collections.abc import Mapping, Sequence
from typing import Any

from .errors import UserError


def opt(default: Any, help: str, **meta: Any) -> Any:
    """A dataclass field with its --help text; `meta` may hold `flag` (the flag's name when it is not
    --field-name; None: no flag of its own), `choices` (fixed valid values), `metavar`, `used_by` (the registry names that read it: its --help
    group) and `check` ((predicate, "valid range in words"): `check_fields` refuses other values). A list default is
    copied per instance (so is a dict default)."""
    metadata = {"help": help, **meta}
    if isinstance(default, (list, dict)):
        return dataclasses.field(default_factory=default.copy, metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def like(cls: type, name: str, **changes: Any) -> Any:
    """The field `name` of config class `cls` again (default and help), for a config that shares its meaning."""
    f = next(f for f in dataclasses.fields(cls) if f.name == name)
    default = f.default_factory() if f.default is dataclasses.MISSING else f.default  # type: ignore[misc]
    return opt(changes.pop("default", default), **{**f.metadata, **changes})


@dataclasses.dataclass(frozen=True)
class Flag:
    """One config field as a flag: `path` is its place in the config ("method.noise_std") and its argparse dest."""

    path: str
    name: str
    kind: Any  # the field's type with Optional removed: int, float, str, bool, tuple[...] or list[...]
    default: Any
    help: str
    choices: tuple[Any, ...] | None
    metavar: Any
    section: str = ""  # the nested config it belongs to ("" at the top level): its --help group
    section_doc: str = ""
    used_by: tuple[str, ...] = ()  # the methods (or other choices) that read it: a --help group of their own


def flag_name(field_name: str) -> str:
    """'noise_std' -> '--noise-std' (and 'num_D' -> '--num-d')."""
    return "--" + field_name.lower().replace("_", "-")


def config_flags(cls: type, prefix: str = "", section: tuple[str, str] = ("", "")) -> list[Flag]:
    """A Flag per leaf field of config dataclass `cls`, nested config dataclasses included, in field order."""
    hints = typing.get_type_hints(cls)
    flags = []
    for f in dataclasses.fields(cls):
        hint = hints[f.name]
        if f.metadata.get("flag", "") is None:
            continue  # set by other flags (e.g. a method's own options)
        if dataclasses.is_dataclass(hint):
            flags += config_flags(hint, f"{prefix}{f.name}.", (f"{prefix}{f.name}", _first_line(hint.__doc__)))
            continue
        default = f.default_factory() if f.default is dataclasses.MISSING else f.default  # type: ignore[misc]
        choices = f.metadata.get("choices")
        flags.append(Flag(f"{prefix}{f.name}", f.metadata.get("flag", flag_name(f.name)), _without_none(hint),
                          default, f.metadata.get("help", ""), tuple(choices) if choices else None,
                          f.metadata.get("metavar", f.name.upper()), *section, tuple(f.metadata.get("used_by", ()))))
    return flags


def add_config_flags(parser: argparse.ArgumentParser, cls: type, *, choices: Mapping[str, Sequence[Any]] | None = None,
                     skip: Sequence[str] = (), notes: Mapping[str, str] | None = None,
                     extra: Sequence[Flag] = ()) -> list[Flag]:
    """Add a flag for every field of `cls`, then each of `extra`, except the paths in `skip`; `choices` gives the valid
    names of fields chosen from a registry, `notes` a text shown instead of "default: ..." (both by path).
    Returns the flags added, for `given`."""
    added, groups = [], {"": parser}
    for flag in [*config_flags(cls), *extra]:
        if flag.path in skip:
            continue
        if choices and flag.path in choices:
            flag = dataclasses.replace(flag, choices=tuple(choices[flag.path]))
        prefix = f"{flag.section}: " if flag.section else ""
        group = f"{prefix}{', '.join(flag.used_by)} only" if flag.used_by else flag.section
        if group not in groups:
            groups[group] = parser.add_argument_group(group, None if flag.used_by else flag.section_doc)
        groups[group].add_argument(flag.name, dest=flag.path, default=argparse.SUPPRESS,
                                   help=_help(flag, (notes or {}).get(flag.path)), **_parsing(flag))
        added.append(flag)
    return added


def check_fields(config: Any) -> None:
    """Refuse a value outside the `check` or the `choices` its field declares, naming the flag and the valid values (NaN
    never passes); nested config dataclasses are checked too."""
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        if dataclasses.is_dataclass(value):
            check_fields(value)
            continue
        flag = f.metadata.get("flag") or flag_name(f.name)
        if "check" in f.metadata:
            ok, valid = f.metadata["check"]
            finite = not (isinstance(value, float) and value != value) and value not in (float("inf"), float("-inf"))
            if value is not None and not (finite and ok(value)):
                raise UserError(f"{flag} {value}: must be {valid}")
        choices = f.metadata.get("choices")
        if choices and value is not None and value not in choices:
            raise UserError(f"{flag} {value}: use {' or '.join(map(str, choices))}")


def given(args: argparse.Namespace, flags: Sequence[Flag]) -> dict[str, Any]:
    """{path: value} of the flags the command line set (flags not typed are absent)."""
    values = vars(args)
    return {f.path: tuple(values[f.path]) if _origin(f.kind) is tuple else values[f.path]
            for f in flags if f.path in values}


def as_words(flags: Sequence[Flag], values: Mapping[str, Any]) -> list[str]:
    """The command-line words that set `values` (by path) through `flags`: the inverse of `given`."""
    words: list[str] = []
    for f in flags:
        if f.path not in values:
            continue
        value = values[f.path]
        if f.kind is bool:
            words.append(f.name if value else "--no-" + f.name[2:])
        elif _origin(f.kind) is list:
            words += [w for item in value for w in (f.name, str(item))]
        else:
            words += [f.name, *map(str, value if _origin(f.kind) is tuple else [value])]
    return words


def apply(cfg: Any, values: Mapping[str, Any]) -> None:
    """Set each dotted `path` of `values` on the (nested) config `cfg`, in place (a dict on the way is set by key)."""
    for path, value in values.items():
        *sections, name = path.split(".")
        target = cfg
        for section in sections:
            target = target[section] if isinstance(target, dict) else getattr(target, section)
        if isinstance(target, dict):
            target[name] = value
        else:
            setattr(target, name, value)


def one_of(names: Sequence[Any]) -> str:
    """'; one of: a, b, c': the valid names as --help lists them."""
    return f"; one of: {', '.join(map(str, names))}"


class DefaultsFormatter(argparse.HelpFormatter):
    """Help that ends each hand-written flag's line with its valid names (when a metavar hides them) and its
    default, when it has a telling one; generated flags (default SUPPRESS) say both already."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if action.default is argparse.SUPPRESS or not action.option_strings:
            return text
        if action.choices and action.metavar:
            text += one_of(action.choices)
        if action.default is None or action.default is False or action.default == [] or "default" in text:
            return text.replace("%", "%%").lstrip("; ")  # nothing telling to show, or the help already says it
        return f"{text} (default: {_shown(action.default)})".replace("%", "%%").lstrip("; ")


class Parser(argparse.ArgumentParser):
    """ArgumentParser whose errors (a bad value, an unknown flag) raise UserError: one line naming the flag, exit 2;
    its --help shows the defaults."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", DefaultsFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> typing.NoReturn:  # type: ignore[override]
        raise UserError(f"{message} (see {self.prog} --help)")


def _first_line(doc: str | None) -> str:
    return doc.strip().splitlines()[0] if doc and doc.strip() else ""


def _without_none(hint: Any) -> Any:
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        rest = [a for a in typing.get_args(hint) if a is not type(None)]
        if len(rest) == 1:
            return rest[0]
    return hint


def _origin(kind: Any) -> Any:
    return typing.get_origin(kind) or kind


def _parsing(flag: Flag) -> dict[str, Any]:
    """argparse keywords for the flag's type: a switch pair, a fixed-length tuple, a repeatable list or a scalar."""
    kind, origin = flag.kind, _origin(flag.kind)
    if kind is bool:
        return {"action": argparse.BooleanOptionalAction}
    keywords: dict[str, Any] = {"metavar": flag.metavar}
    if origin is tuple:
        item_types = typing.get_args(kind)
        keywords.update(type=item_types[0], nargs=len(item_types))
    elif origin is list:
        keywords.update(type=typing.get_args(kind)[0], action="append")
    elif kind in (int, float, str):
        keywords["type"] = kind
    else:
        raise TypeError(f"config field {flag.path}: no flag for type {kind!r}")
    if flag.choices:
        keywords["choices"] = flag.choices
    return keywords


def _help(flag: Flag, note: str | None) -> str:
    text = flag.help
    if flag.choices:
        text += one_of(flag.choices)
    text += f" ({note or 'default: ' + _shown(flag.default)})"
    return text.replace("%", "%%")  # argparse %-formats help strings


def _shown(value: Any) -> str:
    if value is None or value == []:
        return "none"
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, (list, tuple)):
        return " ".join(map(str, value))
    return str(value)
