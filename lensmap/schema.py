"""The one engine that turns parsed YAML into checked dataclasses.

:func:`build` builds a dataclass from a mapping, field by field: unknown keys, missing
required keys and wrong types are :class:`~lensmap.errors.ConfigError` s that name the field
by its path (``probes[1].target``) and say what it should be. Nested dataclasses, lists and
mappings are checked recursively; a field typed ``Any`` is passed through for the code that
reads it. Semantic checks (allowed values, files that must exist) live beside each section.
Every command's config (:mod:`lensmap.config`) and every library function that accepts a
plain mapping for its settings (``evaluate_model(handle, {"benchmarks": [...]})``) use it.
"""

from __future__ import annotations

import dataclasses
import os
import types
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TypeVar, Union, get_args, get_origin, get_type_hints

import yaml

from lensmap.errors import ConfigError
from lensmap.io import expand_path

T = TypeVar("T")


def _type_name(tp: Any) -> str:
    origin = get_origin(tp)
    if origin is list:
        return f"a list of {_type_name(get_args(tp)[0])}"
    if origin is dict:
        return "a mapping"
    if dataclasses.is_dataclass(tp):
        return "a mapping"
    return {str: "a string", int: "an integer", float: "a number", bool: "true or false"}.get(tp, str(tp))


def build(cls: type[T], data: Any, where: str = "") -> T:
    """Build dataclass ``cls`` from parsed YAML ``data``, checking keys and types."""
    if not isinstance(data, dict):
        raise ConfigError(f"{where or 'the config'} must be a mapping of keys to values, got {type(data).__name__}")
    hints = get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = [k for k in data if k not in fields]
    if unknown:
        raise ConfigError(
            f"unknown key {unknown[0]!r} in {where or 'the config'}; allowed keys: {', '.join(fields)}"
        )
    missing = [name for name, f in fields.items()
               if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING and name not in data]
    if missing:
        raise ConfigError(f"{where or 'the config'} is missing the required key {missing[0]!r}")
    values = {}
    for name, value in data.items():
        at = f"{where}.{name}" if where else name
        values[name] = _convert(hints[name], value, at)
        if fields[name].metadata.get("path"):
            values[name] = _expand(values[name], at)
    return cls(**values)


def path_field(default: Any = dataclasses.MISSING, **kwargs: Any) -> Any:
    """A dataclass field holding a path (or a list or mapping of paths): ``~`` and ``$VARS`` are expanded.

    ``build`` expands each path as a shell would (:func:`lensmap.io.expand_path`); an unset
    variable is a ConfigError naming the field.
    """
    return dataclasses.field(default=default, metadata={"path": True}, **kwargs)


def _expand(value: Any, where: str) -> Any:
    if isinstance(value, str):  # the text is kept as written unless it has something to expand (./x stays ./x)
        return str(expand_path(value, field=where)) if value and ("~" in value or "$" in value) else value
    if isinstance(value, list):
        return [_expand(v, f"{where}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, dict):
        return {k: _expand(v, f"{where}.{k}") for k, v in value.items()}
    return value


def _convert(tp: Any, value: Any, where: str) -> Any:
    if tp is Any:  # a free-form section, checked by the code that reads it
        return value
    origin = get_origin(tp)
    if dataclasses.is_dataclass(tp):
        return build(tp, value, where)
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{where} must be {_type_name(tp)}, got {value!r}")
        (item,) = get_args(tp)
        return [_convert(item, v, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where} must be a mapping, got {value!r}")
        return {str(k): _convert(get_args(tp)[1], v, f"{where}.{k}") for k, v in value.items()}
    if origin is Union or isinstance(tp, types.UnionType):
        options = [a for a in get_args(tp) if a is not type(None)]
        if len(options) != 1 or len(get_args(tp)) != 2:
            raise TypeError("the config schema has only optional unions (X | None)")
        return None if value is None else _convert(options[0], value, where)
    if tp is float and isinstance(value, str):  # YAML 1.1 reads 1e-5 (no dot) as a string
        try:
            return float(value)
        except ValueError:
            pass
    ok = (
        (tp is bool and isinstance(value, bool))
        or (tp is int and isinstance(value, int) and not isinstance(value, bool))
        or (tp is float and isinstance(value, (int, float)) and not isinstance(value, bool))
        or (tp is str and isinstance(value, str))
    )
    if not ok:
        raise ConfigError(f"{where} must be {_type_name(tp)}, got {value!r}")
    return float(value) if tp is float else value


def check_choice(value: str, choices: Sequence[str], where: str) -> None:
    """A ConfigError naming ``where`` unless ``value`` is one of ``choices``."""
    if value not in choices:
        raise ConfigError(f"{where} must be one of {', '.join(choices)}; got {value!r}")


def read_yaml(path: str | os.PathLike, empty_hint: str = "see examples/demo.yaml for a minimal config") -> Any:
    """Parsed YAML of a config file; a missing, unreadable, invalid or empty file is a ConfigError."""
    path = Path(os.path.expandvars(os.path.expanduser(str(path))))
    if path.is_dir():
        raise ConfigError(f"config file {str(path)!r} is a directory; give the YAML file inside it")
    if not path.is_file():
        raise ConfigError(f"config file {str(path)!r} does not exist")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError(f"{path} is not valid YAML{at}: {getattr(error, 'problem', error)}") from None
    except OSError as error:
        raise ConfigError(f"cannot read the config file {path}: {error.strerror or error}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path} is not UTF-8 text") from None
    if data is None:
        raise ConfigError(f"{path} is empty; {empty_hint}")
    return data
