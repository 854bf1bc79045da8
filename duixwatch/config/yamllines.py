"""A YAML reader that knows the line of every key: what makes ``FILE:LINE: key.path`` errors.

:class:`LineLoader` is a PyYAML ``SafeLoader`` driven node by node. It records the 1-based line
of every mapping key and sequence item by key path, rejects duplicate keys and keys that are
not strings, supports merge keys (``<<: *anchor``, an own key after a merge overriding the
merged one as YAML intends), refuses an alias that refers to itself and tags other than the
plain mapping and sequence ones, and notes integers whose text is not their plain decimal
(``0123``, ``0x1F``: an app id written that way is not the id the operator meant).
:func:`yaml_problem` turns a syntax error into a line and a text without the source excerpt
(which may hold a key).

The events come from libyaml's scanner and parser (C) when PyYAML has it — four times faster
than PyYAML's own, which a file of 100,000 APPs feels — and from PyYAML's pure-Python ones
otherwise; composing and building are the same Python either way. Characters YAML forbids
(NUL, BEL, ESC …) are found first, by PyYAML's own pattern, so both report the same line.

Hostile input is bounded, each bound an error on the line where it is crossed: nesting deeper
than :data:`MAX_DEPTH` (PyYAML's composer recurses once per level, so thousands of ``[`` ended
in a RecursionError: the composer here keeps its own stack, and the builder counts what
aliases expand to as well), merge keys chained deeper than that, and aliases (merge keys
included) that add more than :data:`MAX_ALIAS_NODES` nodes ("billion laughs": a few hundred
bytes that expand to millions of nodes), named by the line of the alias being expanded.

:func:`gc_paused` holds the cyclic garbage collector off while a config is built (the
loader's whole load runs under it): with a big file, the collector was most of the time.
"""

from __future__ import annotations

import gc
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Final, Protocol

import yaml

from duixwatch.core import errors
from duixwatch.core.fields import KeyPath, dotted

__all__ = [
    "MAX_ALIAS_NODES",
    "MAX_DEPTH",
    "ConfigFileError",
    "LineLoader",
    "Problem",
    "YamlSyntaxError",
    "gc_paused",
    "parse_yaml",
    "yaml_problem",
]


#: Levels of nested mappings and lists at most. The deepest config key is six levels down
#: (``policies[0].notify[0].headers.X``); a few thousand is a hostile or generated file.
MAX_DEPTH = 64
#: Nodes that aliases (and merge keys) may add to the document, all together: 2,000 APPs
#: merging five shared settings add 10,000; seven levels of ten aliases ("billion laughs", a
#: few hundred bytes) would add ten million, and take gigabytes and half a minute to build.
MAX_ALIAS_NODES = 100_000
#: The tag of a plain string: its value is the scalar's text (what SafeConstructor returns).
_STR: Final = "tag:yaml.org,2002:str"
#: How much of a key path a limit's error shows (the rest of a deep path is noise).
_SHOWN_PARTS = 4


def _shown(path: KeyPath) -> str:
    return dotted(path[:_SHOWN_PARTS]) + ("…" if len(path) > _SHOWN_PARTS else "")


def _too_deep(line: int, path: KeyPath, *, aliases: bool = False) -> YamlSyntaxError:
    counting = " (counting what its aliases expand to)" if aliases else ""
    return YamlSyntaxError(
        line,
        f"{_shown(path)}: YAML nested more than {MAX_DEPTH} levels deep{counting}: "
        "not a config file",
    )


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


#: Whether :func:`parse_yaml` reads with libyaml by default (PyYAML built with it).
LIBYAML: Final = yaml.__with_libyaml__


class _Events(Protocol):
    """A YAML parser: PyYAML's, or libyaml's ``CParser``."""

    def check_event(self, *choices: type[yaml.Event]) -> bool: ...
    def peek_event(self) -> yaml.Event | None: ...
    def get_event(self) -> yaml.Event | None: ...
    def dispose(self) -> None: ...


class _PurePython(yaml.reader.Reader, yaml.scanner.Scanner, yaml.parser.Parser):
    """PyYAML's own scanner and parser, for a PyYAML built without libyaml."""

    def __init__(self, stream: str) -> None:
        yaml.reader.Reader.__init__(self, stream)
        yaml.scanner.Scanner.__init__(self)
        yaml.parser.Parser.__init__(self)


def _events(stream: str, *, libyaml: bool) -> _Events:
    if libyaml:
        from yaml._yaml import CParser  # only importable when PyYAML has libyaml

        return CParser(stream)
    return _PurePython(stream)


class LineLoader(yaml.composer.Composer, yaml.constructor.SafeConstructor, yaml.resolver.Resolver):
    """PyYAML's SafeLoader in its parts — composer, safe constructor, resolver — over the
    events of a parser (:func:`_events`), driven node by node, recording the 1-based line of
    every key path.

    Keys must be strings and unique within their mapping; merge keys (``<<: *anchor``) work,
    and an own key after a merge overrides the merged one as YAML intends. ``libyaml``: the
    events come from libyaml's parser (else PyYAML's).
    """

    check_event: Callable[..., bool]
    peek_event: Callable[[], yaml.Event | None]
    get_event: Callable[[], yaml.Event | None]
    dispose: Callable[[], None]

    def __init__(self, stream: str, *, libyaml: bool = LIBYAML) -> None:
        events = _events(stream, libyaml=libyaml)
        # The parser's methods, bound: what the Composer calls, without a call in between.
        self.check_event = events.check_event
        self.peek_event = events.peek_event
        self.get_event = events.get_event
        self.dispose = events.dispose
        yaml.composer.Composer.__init__(self)
        yaml.constructor.SafeConstructor.__init__(self)
        yaml.resolver.Resolver.__init__(self)
        self.lines: dict[KeyPath, int] = {}
        #: Integer scalars whose text is not their plain decimal (``0123``, ``0x1F``, ``1_0``).
        self.odd_ints: dict[KeyPath, str] = {}
        self.problems: list[Problem] = []
        self._checked: set[int] = set()
        self._active: set[int] = set()
        #: The line of each sequence item given as an alias, by (id of the sequence, index):
        #: the node is the anchor's, and so is its mark.
        self._alias_lines: dict[tuple[int, int], int] = {}
        self._merging = 0
        #: Nodes built once: building one again expands an alias or a merge key.
        self._built: set[int] = set()
        #: Nodes with an anchor: the only ones an alias can lead back to.
        self._anchored: set[int] = set()
        #: The path of the outermost alias being expanded: limits crossed inside name its line.
        self._alias: KeyPath | None = None
        #: Nodes built again, through an alias or a merge key (:data:`MAX_ALIAS_NODES`).
        self._expanded = 0

    # -- composing: PyYAML's Composer, without its recursion ------------------------------

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node | None:
        """The node at the parser's position, composed with an explicit stack of the open
        collections (PyYAML's recurses once per level) that may not grow past
        :data:`MAX_DEPTH`. Otherwise as PyYAML's: an anchor is registered when its node opens
        (so a recursive alias resolves), tags are resolved by the
        :class:`~yaml.resolver.Resolver` (a SafeLoader has no path resolvers, so there is no
        ``descend_resolver``/``ascend_resolver`` to keep).
        """
        del parent, index  # only the document's root is composed through here
        # Locals and exact types: this loop runs once per event (a million for 120,000 APPs).
        get_event, resolve, scalar_event = self.get_event, self.resolve, yaml.ScalarEvent
        ends = (yaml.SequenceEndEvent, yaml.MappingEndEvent)
        stack: list[list[Any]] = []  # [collection node, pending mapping key node or None]
        while True:
            event: Any = get_event()
            kind = type(event)
            node: yaml.Node
            if kind is scalar_event and event.anchor is None:
                tag = event.tag
                if tag is None or tag == "!":
                    tag = resolve(yaml.ScalarNode, event.value, event.implicit)  # type: ignore[no-untyped-call]
                node = yaml.ScalarNode(
                    tag, event.value, event.start_mark, event.end_mark, event.style
                )
            elif kind in ends:
                node = stack.pop()[0]
                node.end_mark = event.end_mark
            elif kind is yaml.AliasEvent:
                node = self._alias_node(event, stack[-1][0] if stack else None)
            else:
                node = self._open(event)
                if isinstance(node, yaml.CollectionNode):
                    if len(stack) >= MAX_DEPTH:
                        raise _too_deep(event.start_mark.line + 1, _stack_path(stack))
                    stack.append([node, None])
                    continue
            if not stack:
                return node
            top = stack[-1]
            if type(top[0]) is yaml.SequenceNode:
                top[0].value.append(node)
            elif top[1] is None:
                top[1] = node
            else:
                top[0].value.append((top[1], node))
                top[1] = None

    def _alias_node(self, event: Any, parent: yaml.Node | None) -> yaml.Node:
        if event.anchor not in self.anchors:
            raise yaml.composer.ComposerError(
                None, None, f"found undefined alias {event.anchor!r}", event.start_mark
            )
        if isinstance(parent, yaml.SequenceNode):
            self._alias_lines[(id(parent), len(parent.value))] = event.start_mark.line + 1
        return self.anchors[event.anchor]

    def _open(self, event: Any) -> yaml.Node:
        """The node a scalar or collection start event begins, its anchor registered."""
        anchor = event.anchor
        if anchor is not None and anchor in self.anchors:
            raise yaml.composer.ComposerError(
                f"found duplicate anchor {anchor!r}; first occurrence",
                self.anchors[anchor].start_mark,
                "second occurrence",
                event.start_mark,
            )
        tag = event.tag
        # Typed loosely: the C parser's Mark is another class than the pure-Python one.
        start: Any = event.start_mark
        end: Any = event.end_mark
        node: yaml.Node
        if isinstance(event, yaml.ScalarEvent):
            if tag is None or tag == "!":
                tag = self.resolve(yaml.ScalarNode, event.value, event.implicit)  # type: ignore[no-untyped-call]
            node = yaml.ScalarNode(tag, event.value, start, end, style=event.style)
        else:
            kind: type[yaml.CollectionNode] = (
                yaml.SequenceNode
                if isinstance(event, yaml.SequenceStartEvent)
                else yaml.MappingNode
            )
            if tag is None or tag == "!":
                tag = self.resolve(kind, None, event.implicit)  # type: ignore[no-untyped-call]
            node = kind(tag, [], start, None, flow_style=event.flow_style)
        if anchor is not None:
            self.anchors[anchor] = node
            self._anchored.add(id(node))
        return node

    def flatten_mapping(self, node: yaml.MappingNode) -> None:
        """PyYAML's merge (``<<``), which recurses once per merge in a chain: bounded."""
        if self._merging >= MAX_DEPTH:
            raise YamlSyntaxError(
                node.start_mark.line + 1,
                f"YAML merge keys (<<) chained more than {MAX_DEPTH} deep: not a config file",
            )
        self._merging += 1
        try:
            super().flatten_mapping(node)
        finally:
            self._merging -= 1

    # -- building: data, lines, problems --------------------------------------------------

    def build(self, node: yaml.Node, path: KeyPath = ()) -> Any:
        key = id(node)
        if key in self._built:
            return self._build_again(node, path)
        self._built.add(key)
        if key not in self._anchored:
            return self._build(node, path)
        self._active.add(key)  # an alias inside leads back here: it refers to itself
        try:
            return self._build(node, path)
        finally:
            self._active.discard(key)

    def _build_again(self, node: yaml.Node, path: KeyPath) -> Any:
        """``node`` once more, under another path: what an alias or a merge key expands to,
        counted, and bounded in depth (the composer bounds only the document's own)."""
        key = id(node)
        if key in self._active:
            self.problems.append(Problem(path, "a YAML alias refers to itself"))
            return None
        outermost = self._alias is None
        if outermost:
            self._alias = path
        try:
            self._expanded += 1
            if self._expanded > MAX_ALIAS_NODES:
                raise YamlSyntaxError(
                    self._alias_line(path),
                    f"{_shown(self._alias or path)}: YAML aliases expand to more than "
                    f"{MAX_ALIAS_NODES:,} nodes (an alias bomb?): not a config file",
                )
            if isinstance(node, yaml.CollectionNode) and len(path) >= MAX_DEPTH:
                raise _too_deep(self._alias_line(path), path, aliases=True)
            self._active.add(key)
            try:
                return self._build(node, path)
            finally:
                self._active.discard(key)
        finally:
            if outermost:
                self._alias = None

    def _alias_line(self, path: KeyPath) -> int:
        """The line of the alias being expanded (else of ``path``)."""
        return self.lines.get(path if self._alias is None else self._alias, 1)

    def _build(self, node: yaml.Node, path: KeyPath) -> Any:
        kind = type(node)
        if kind is yaml.ScalarNode:
            return node.value if node.tag == _STR else self._scalar(node, path)
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
                line = self._alias_lines.get((id(node), index))
                self.lines[(*path, index)] = line or item.start_mark.line + 1
                items.append(self.build(item, (*path, index)))
            return items
        return self._scalar(node, path)

    def _scalar(self, node: yaml.Node, path: KeyPath) -> Any:
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
        if type(node) is yaml.ScalarNode:
            if node.tag == _STR:
                return str(node.value)
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


def _stack_path(stack: list[list[Any]]) -> KeyPath:
    """The key path of the node the innermost open collection of ``stack`` is composing."""
    path: list[str | int] = []
    for collection, pending in stack:
        if isinstance(collection, yaml.SequenceNode):
            path.append(len(collection.value))
        else:
            path.append(pending.value if isinstance(pending, yaml.ScalarNode) else "?")
    return tuple(path)


class YamlSyntaxError(ValueError):
    """The text is not YAML: ``line`` and a ``message`` that quotes none of the source."""

    def __init__(self, line: int, message: str) -> None:
        super().__init__(f"{line}: {message}")
        self.line = line
        self.message = message


def parse_yaml(text: str, *, libyaml: bool = LIBYAML) -> tuple[Any, LineLoader]:
    """The data of ``text`` and the loader that read it (its ``lines``, ``odd_ints`` and
    ``problems``); raises :class:`YamlSyntaxError`, never chained to the YAML error (whose text
    quotes the source line, which may hold a key). ``libyaml``: parse with libyaml (the
    default when PyYAML has it), else with PyYAML's pure-Python parser."""
    forbidden = yaml.reader.Reader.NON_PRINTABLE.search(text)
    if forbidden is not None:
        # A character YAML forbids (NUL, BEL, ESC …, as a terminal paste leaves): its line,
        # and its code point, never the text around it.
        raise YamlSyntaxError(
            text.count("\n", 0, forbidden.start()) + 1,
            f"YAML: character U+{ord(forbidden.group()):04X} is not allowed in a YAML file",
        )
    syntax: tuple[int, str] | None = None
    loader: LineLoader | None = None
    data: Any = None
    try:
        loader = LineLoader(text, libyaml=libyaml)
        node = loader.get_single_node()
        data = loader.build(node) if node is not None else None
    except yaml.YAMLError as exc:
        syntax = yaml_problem(exc)
    finally:
        if loader is not None:
            loader.dispose()
    if syntax is not None or loader is None:
        line, message = syntax or (1, "YAML syntax error")
        raise YamlSyntaxError(line, message)
    return data, loader


class _GcPause:
    """Who holds the cyclic garbage collector off (:func:`gc_paused`), process-wide."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.holders = 0
        self.was_enabled = False


_GC_PAUSE = _GcPause()


@contextmanager
def gc_paused() -> Iterator[None]:
    """The cyclic garbage collector off while a config is built: a million nodes, dicts and
    models, none of them garbage, and the collector scanning them again and again took more
    than half of a 120,000-APP load. Memory is still freed by reference counting. The
    collector is process-wide: concurrent loads (a reload in a worker thread, a web config
    being reloaded) count as holders, and the last to finish turns it back on if it was on.
    """
    pause = _GC_PAUSE
    with pause.lock:
        if pause.holders == 0:
            pause.was_enabled = gc.isenabled()
            gc.disable()
        pause.holders += 1
    try:
        yield
    finally:
        with pause.lock:
            pause.holders -= 1
            if pause.holders == 0 and pause.was_enabled:
                gc.enable()


def yaml_problem(exc: yaml.YAMLError) -> tuple[int, str]:
    """Line and text of a YAML error, without the source excerpt (it may hold a key)."""
    if not isinstance(exc, yaml.MarkedYAMLError):
        return 1, "YAML syntax error"
    mark = exc.problem_mark or exc.context_mark
    line = mark.line + 1 if mark else 1
    if exc.problem == "exceeded maximum nesting depth":
        # libyaml's own bound (1,000 flow levels), met before MAX_DEPTH when its scanner
        # looks ahead through a run of [ for a possible key: the same error, less the path.
        return line, f"YAML nested more than {MAX_DEPTH} levels deep: not a config file"
    context = exc.context or ""
    if context and exc.context_mark is not None and exc.context_mark.line + 1 != line:
        context += f" (from line {exc.context_mark.line + 1})"
    text = "; ".join(part for part in (context, exc.problem) if part)
    return line, f"YAML syntax error: {text or 'invalid YAML'}"
