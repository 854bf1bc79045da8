"""A YAML reader that knows the line of every key: what makes ``FILE:LINE: key.path`` errors.

:class:`LineLoader` is a PyYAML ``SafeLoader`` driven node by node. It records the 1-based line
of every mapping key and sequence item by key path, rejects duplicate keys and keys that are
not strings, supports merge keys (``<<: *anchor``, an own key after a merge overriding the
merged one as YAML intends), refuses an alias that refers to itself and tags other than the
plain mapping and sequence ones, and notes integers whose text is not their plain decimal
(``0123``, ``0x1F``: an app id written that way is not the id the operator meant).
:func:`yaml_problem` turns a syntax error into a line and a text without the source excerpt
(which may hold a key).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import yaml

from duixwatch.core import errors
from duixwatch.core.fields import KeyPath

__all__ = [
    "ConfigFileError",
    "LineLoader",
    "Problem",
    "YamlSyntaxError",
    "parse_yaml",
    "yaml_problem",
]


class ConfigFileError(errors.ConfigError):
    """The config file (or its env overrides) is invalid.

    ``errors`` holds one line per problem (``FILE:LINE: key.path: what is wrong``), sorted by
    line; the message is all of them, one per line. ``path`` is the file as given.
    """

    def __init__(self, path: str, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.path = path
        self.errors = problems
        self.location = problems[0].split(": ", 1)[0] if problems else path


@dataclass(frozen=True, slots=True)
class Problem:
    """One problem at a key path; ``env`` names the variable when no key path applies."""

    path: KeyPath
    message: str
    env: str | None = None


class LineLoader(yaml.SafeLoader):
    """A SafeLoader driven node by node, recording the 1-based line of every key path.

    Keys must be strings and unique within their mapping; merge keys (``<<: *anchor``) work,
    and an own key after a merge overrides the merged one as YAML intends.
    """

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self.lines: dict[KeyPath, int] = {}
        #: Integer scalars whose text is not their plain decimal (``0123``, ``0x1F``, ``1_0``).
        self.odd_ints: dict[KeyPath, str] = {}
        self.problems: list[Problem] = []
        self._checked: set[int] = set()
        self._active: set[int] = set()

    def build(self, node: yaml.Node, path: KeyPath = ()) -> Any:
        if id(node) in self._active:
            self.problems.append(Problem(path, "a YAML alias refers to itself"))
            return None
        self._active.add(id(node))
        try:
            return self._build(node, path)
        finally:
            self._active.discard(id(node))

    def _build(self, node: yaml.Node, path: KeyPath) -> Any:
        if isinstance(node, yaml.MappingNode):
            if node.tag != "tag:yaml.org,2002:map":
                self.problems.append(Problem(path, f"unsupported YAML tag {node.tag}"))
                return None
            return self._mapping(node, path)
        if isinstance(node, yaml.SequenceNode):
            if node.tag != "tag:yaml.org,2002:seq":
                self.problems.append(Problem(path, f"unsupported YAML tag {node.tag}"))
                return None
            items = []
            for index, item in enumerate(node.value):
                self.lines[(*path, index)] = item.start_mark.line + 1
                items.append(self.build(item, (*path, index)))
            return items
        try:
            value = self.construct_object(node, deep=True)
        except (ValueError, OverflowError):
            # e.g. a date that does not exist (2024-13-45): keep the text, validation decides.
            self.problems.append(Problem(path, f"cannot read the value as {node.tag}"))
            return node.value
        if isinstance(value, int) and not isinstance(value, bool) and node.value != str(value):
            self.odd_ints[path] = node.value
        return value

    def _key(self, node: yaml.Node) -> str | None:
        if isinstance(node, yaml.ScalarNode):
            key = self.construct_object(node)
            if isinstance(key, str):
                return key
        return None

    def _mapping(self, node: yaml.MappingNode, path: KeyPath) -> dict[str, Any]:
        if id(node) not in self._checked:
            self._checked.add(id(node))
            first_line: dict[str, int] = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                key = self._key(key_node)
                line = key_node.start_mark.line + 1
                if key is None:
                    shown = key_node.value if isinstance(key_node, yaml.ScalarNode) else "?"
                    self.lines[(*path, str(shown))] = line
                    self.problems.append(
                        Problem((*path, str(shown)), "keys must be strings (quote the key)")
                    )
                elif key in first_line:
                    self.lines[(*path, key)] = line
                    self.problems.append(
                        Problem(
                            (*path, key), f"duplicate key (first given on line {first_line[key]})"
                        )
                    )
                else:
                    first_line[key] = line
        self.flatten_mapping(node)
        result: dict[str, Any] = {}
        for key_node, value_node in node.value:
            key = self._key(key_node)
            if key is None:
                continue
            child = (*path, key)
            # The last occurrence wins, as its value does (merged keys come first).
            self.lines[child] = key_node.start_mark.line + 1
            result[key] = self.build(value_node, child)
        return result


class YamlSyntaxError(ValueError):
    """The text is not YAML: ``line`` and a ``message`` that quotes none of the source."""

    def __init__(self, line: int, message: str) -> None:
        super().__init__(f"{line}: {message}")
        self.line = line
        self.message = message


def parse_yaml(text: str) -> tuple[Any, LineLoader]:
    """The data of ``text`` and the loader that read it (its ``lines``, ``odd_ints`` and
    ``problems``); raises :class:`YamlSyntaxError`, never chained to the YAML error (whose text
    quotes the source line, which may hold a key)."""
    syntax: tuple[int, str] | None = None
    loader: LineLoader | None = None
    data: Any = None
    try:
        loader = LineLoader(text)  # checks every character first (ReaderError)
        node = loader.get_single_node()
        data = loader.build(node) if node is not None else None
    except yaml.reader.ReaderError as exc:
        syntax = (text.count("\n", 0, exc.position) + 1, yaml_problem(exc)[1])
    except yaml.YAMLError as exc:
        syntax = yaml_problem(exc)
    except RecursionError:
        syntax = (1, "YAML nested too deeply (hundreds of [ or {): not a config file")
    finally:
        if loader is not None:
            loader.dispose()
    if syntax is not None or loader is None:
        line, message = syntax or (1, "YAML syntax error")
        raise YamlSyntaxError(line, message)
    return data, loader


def yaml_problem(exc: yaml.YAMLError) -> tuple[int, str]:
    """Line and text of a YAML error, without the source excerpt (it may hold a key)."""
    if isinstance(exc, yaml.reader.ReaderError):
        # A character YAML forbids (NUL, BEL, ESC …, as a terminal paste leaves): its line,
        # and its code point, never the text around it.
        return 1, f"YAML: character U+{exc.character:04X} is not allowed in a YAML file"
    if not isinstance(exc, yaml.MarkedYAMLError):
        return 1, "YAML syntax error"
    mark = exc.problem_mark or exc.context_mark
    line = mark.line + 1 if mark else 1
    context = exc.context or ""
    if context and exc.context_mark is not None and exc.context_mark.line + 1 != line:
        context += f" (from line {exc.context_mark.line + 1})"
    text = "; ".join(part for part in (context, exc.problem) if part)
    return line, f"YAML syntax error: {text or 'invalid YAML'}"
