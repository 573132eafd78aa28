"""YAML loading with line numbers: a SafeLoader bounded against alias bombs, deep nesting and big files, and the
document of a policy file with the line of every key path. Problems come back as one-line `file: message` texts."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from ..errors import Problem, UsageError
from ..model.sizes import MIB, format_size
from .parsers import type_name


# Bounds on what one YAML file may make us build. A real policy or price table has a few hundred nodes; aliases let
# a few hundred bytes stand for billions of them ("billion laughs"), and every walk over the data would expand them.
MAX_YAML_FILE_BYTES = 16 * MIB
MAX_YAML_NODES = 100_000  # nodes of the document with every alias expanded (merge keys included)
MAX_YAML_DEPTH = 64  # nested mappings and lists; the composer recurses per level


class YamlLimitError(yaml.YAMLError):
    """A document over MAX_YAML_NODES or MAX_YAML_DEPTH, or with an alias to itself; refused before it is built."""


class _Loader(yaml.SafeLoader):
    """SafeLoader without YAML 1.1 base-60 numbers (`time_limit: 24:00:00` must stay a string, not 86400), that counts
    the document's size with aliases expanded while it composes it, so an alias bomb is refused in linear time."""

    def __init__(self, stream: str):
        super().__init__(stream)
        self._expanded: dict[int, int] = {}  # id(node) -> its size with aliases expanded (the tree keeps nodes alive)
        self._depth = 0

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node:
        alias = self.check_event(yaml.AliasEvent)
        self._depth += 1
        try:
            if self._depth > MAX_YAML_DEPTH:
                raise YamlLimitError(f"the document nests mappings and lists more than {MAX_YAML_DEPTH} levels deep")
            node = super().compose_node(parent, index)
        finally:
            self._depth -= 1
        if alias:
            if id(node) not in self._expanded:
                raise YamlLimitError("an alias refers to the mapping or list that contains it (a cycle)")
            return node
        if isinstance(node, yaml.SequenceNode):
            count = 1 + sum(self._expanded[id(child)] for child in node.value)
        elif isinstance(node, yaml.MappingNode):
            count = 1 + sum(self._expanded[id(k)] + self._expanded[id(v)] for k, v in node.value)
        else:
            count = 1
        if count > MAX_YAML_NODES:
            raise YamlLimitError(f"the document expands to more than {MAX_YAML_NODES:,} nodes (aliases nested in aliases?); "
                                 "write the values out instead of nesting aliases")
        self._expanded[id(node)] = count
        return node


_Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers
            if not (tag in ("tag:yaml.org,2002:int", "tag:yaml.org,2002:float") and regexp.match("1:30"))]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:int", re.compile(r"^(?:[-+]?0b[0-1_]+|[-+]?0[0-7_]+|[-+]?(?:0|[1-9][0-9_]*)|[-+]?0x[0-9a-fA-F_]+)$"),
    list("-+0123456789"))
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+][0-9]+)?|\.[0-9_]+(?:[eE][-+][0-9]+)?"
               r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"),
    list("-+0123456789."))

KeyPath = tuple[str, ...]


@dataclass
class Document:
    file: str
    data: dict
    lines: dict[KeyPath, int]


def _node_to_data(loader: _Loader, node: yaml.Node, path: KeyPath, lines: dict[KeyPath, int],
                  problems: list[Problem], file: str) -> Any:
    lines.setdefault(path, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        loader.flatten_mapping(node)
        out: dict = {}
        for key_node, value_node in node.value:
            key = loader.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            if not isinstance(key, str):
                problems.append(Problem(file, ".".join(path), f"key {key!r} must be a string", line))
                continue
            if key in out:
                problems.append(Problem(file, ".".join(path + (key,)), "duplicate key", line))
                continue
            lines[path + (key,)] = line
            out[key] = _node_to_data(loader, value_node, path + (key,), lines, problems, file)
        return out
    if isinstance(node, yaml.SequenceNode):
        return [_node_to_data(loader, n, path, lines, problems, file) for n in node.value]
    return loader.construct_object(node, deep=True)


def _read_yaml_text(path: Path) -> str:
    """The file's text; ValueError with a one-line reason when it is missing, unreadable, too big or not UTF-8."""
    try:
        with open(path, "rb") as f:
            raw = f.read(MAX_YAML_FILE_BYTES + 1)
    except FileNotFoundError:
        raise ValueError("file not found") from None
    except IsADirectoryError:
        raise ValueError("is a directory, not a YAML file") from None
    except OSError as e:
        raise ValueError(f"cannot read: {e.strerror}") from None
    if len(raw) > MAX_YAML_FILE_BYTES:
        raise ValueError(f"larger than {format_size(MAX_YAML_FILE_BYTES)}: not a policy or price table")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ValueError(f"not UTF-8 text (byte {e.start}): is this the YAML file you meant?") from None


def _yaml_problem(e: yaml.YAMLError) -> str:
    if isinstance(e, YamlLimitError):
        return f"refused: {e}"
    if isinstance(e, yaml.reader.ReaderError):  # a control character: binary data, not text
        return f"not a text file: character #x{e.character:04x} at byte {e.position} is not allowed in YAML"
    if isinstance(e, yaml.MarkedYAMLError):
        mark = e.problem_mark or e.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        return f"YAML syntax error: {where}{e.problem or e.context}"
    return f"YAML error: {str(e).splitlines()[0]}"


def read_yaml(path: str | os.PathLike[str]) -> Any:
    """The data of one YAML file (a price table, a probe of a file's kind), read with the policies' limits and
    resolvers; UsageError naming the file, in one line, for anything that is not a readable YAML document."""
    try:
        loader = _Loader(_read_yaml_text(Path(path)))
    except ValueError as e:
        raise UsageError(str(e), path=str(path)) from None
    except yaml.YAMLError as e:
        raise UsageError(_yaml_problem(e), path=str(path)) from None
    try:
        return loader.get_single_data()
    except yaml.YAMLError as e:
        raise UsageError(_yaml_problem(e), path=str(path)) from None
    finally:
        loader.dispose()


def load_document(path: Path, problems: list[Problem]) -> Document | None:
    file = str(path)
    try:
        loader = _Loader(_read_yaml_text(path))  # the reader refuses control characters here already
    except ValueError as e:
        problems.append(Problem(file, "", str(e)))
        return None
    except yaml.YAMLError as e:
        problems.append(Problem(file, "", _yaml_problem(e)))
        return None
    try:
        node = loader.get_single_node()
        if node is None:
            problems.append(Problem(file, "", "file is empty; expected a mapping of policy keys"))
            return None
        lines: dict[KeyPath, int] = {}
        data = _node_to_data(loader, node, (), lines, problems, file)
    except yaml.YAMLError as e:
        problems.append(Problem(file, "", _yaml_problem(e)))
        return None
    finally:
        loader.dispose()
    if not isinstance(data, dict):
        problems.append(Problem(file, "", f"expected a mapping of policy keys at the top, got {type_name(data)}", 1))
        return None
    return Document(file, data, lines)

