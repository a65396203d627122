"""Reading a config: YAML files and ``--set`` overrides, and one line per validation problem.

Everything here names the file, the override or the dotted field that is wrong, so that bad
input ends in one clear message (``ConfigError``), never a traceback.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError


class ConfigError(ValueError):
    """A configuration that cannot run; the message names the field and what is allowed."""


def format_validation_error(err: ValidationError, prefix: str = "") -> str:
    """One line per problem: the dotted field, what is wrong, and the value given."""
    lines = []
    for item in _drop_union_noise(err.errors()):
        loc = ".".join(str(p) for p in item["loc"] if not str(p).startswith("function-"))
        field = ".".join(p for p in (prefix, loc) if p) or "(config)"
        msg = item["msg"].removeprefix("Value error, ")
        if item["type"] == "finite_number":
            msg = "must be a finite number"
        given = "" if item["type"] == "missing" else f" (got {item.get('input')!r})"
        if "(got" in msg or isinstance(item.get("input"), dict):
            given = ""  # a model-level check names its own values; the whole section is noise
        line = f"{field}: {msg}{given}"
        if line not in lines:  # members of one union (float | int) may say the same thing
            lines.append(line)
    return "\n".join(lines)


def _drop_union_noise(items: list[dict]) -> list[dict]:
    """A non-finite value in a union field reported once, at the field, not once per member.

    Pydantic reports a value that fits no member of ``float | str | list[float]`` once per
    member, each under a location ending in the member's tag (``options.x.str``). When a member
    refused the value as non-finite, that is the problem: the other members' errors about the
    same input are dropped, and the member's tag is taken out of the locations under it. A
    length error a failed item caused (the tuple was long enough) is dropped too.
    """
    dropped: set[int] = set()
    tags: set[tuple] = set()  # locations of union members whose tag leaves the location
    for bad in items:
        loc = bad["loc"]
        for i in range(len(loc) if bad["type"] == "finite_number" else 0):
            siblings = [
                j
                for j, other in enumerate(items)
                if other["type"] != "finite_number"
                and len(other["loc"]) == i + 1
                and other["loc"][:i] == loc[:i]
                and other["loc"][i] != loc[i]
                and _walk(other["input"], loc[i + 1 :]) is bad["input"]
            ]
            if siblings:
                dropped.update(siblings)
                tags.add(loc[: i + 1])
                break
    kept = []
    for k, item in enumerate(items):
        if k in dropped or _caused_by_items(item):
            continue
        loc = item["loc"]
        for i in range(len(loc)):
            if loc[: i + 1] in tags:
                loc = loc[:i] + loc[i + 1 :]
                break
        kept.append({**item, "loc": loc})
    return kept


def _caused_by_items(item: dict) -> bool:
    """A too-short error on a sequence that was long enough: pydantic counts only valid items."""
    given, least = item.get("input"), (item.get("ctx") or {}).get("min_length")
    return (
        item["type"] == "too_short"
        and isinstance(given, (list, tuple))
        and least is not None
        and len(given) >= least
    )


def _walk(node: Any, path: tuple) -> Any:
    """``node[path[0]][path[1]]...``, or None where the path does not exist."""
    for key in path:
        try:
            node = node[key]
        except (KeyError, IndexError, TypeError):
            return None
    return node


def set_dotted(data: dict, dotted: str, value: Any) -> None:
    keys = dotted.split(".")
    if not all(k.strip() for k in keys):
        raise ConfigError(f"--set {dotted}: empty key between dots")
    node = data
    for key in keys[:-1]:
        child = node.setdefault(key, {})
        if not isinstance(child, dict):
            raise ConfigError(f"--set {dotted}: '{key}' is not a section")
        node = child
    node[keys[-1]] = value


def yaml_problem(err: yaml.YAMLError) -> str:
    """What is wrong and where (1-based line and column), without the YAML internals dump."""
    problem = getattr(err, "problem", None)
    mark = getattr(err, "problem_mark", None)
    if problem is None or mark is None:  # ReaderError and plain YAMLError carry no marks
        return str(err).splitlines()[0] if str(err) else type(err).__name__
    text = f"{problem} at line {mark.line + 1}, column {mark.column + 1}"
    context, start = getattr(err, "context", None), getattr(err, "context_mark", None)
    if context and start is not None:
        text += f" ({context} started at line {start.line + 1}, column {start.column + 1})"
    return text


def read_yaml(path: Path) -> dict:
    """The mapping a YAML config file holds; ConfigError naming the file for anything else."""
    if path.is_dir():
        raise ConfigError(f"config file {path}: is a directory, not a YAML file")
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        raw = path.read_bytes()
    except OSError as err:
        raise ConfigError(f"config file {path}: cannot be read ({err.strerror or err})") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise ConfigError(
            f"config file {path}: not UTF-8 text (byte 0x{raw[err.start]:02x} at offset "
            f"{err.start}); give a YAML file"
        ) from None
    try:
        loaded = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise ConfigError(f"config file {path}: not valid YAML: {yaml_problem(err)}") from None
    if loaded is not None and not isinstance(loaded, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of sections")
    return loaded or {}
