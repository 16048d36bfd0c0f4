"""Reading a workflow file: YAML text into plain values that remember where they came from.

ruamel.yaml's safe loader composes the document into nodes (each with its start mark); we
turn those nodes into :class:`Located` values ourselves, so every value keeps its 1-based line
and column. Nothing here runs code: only the core YAML tags are accepted (a ``!!python/...``
or any other tag is a problem at its position), aliases are followed up to a budget of nodes
(a "billion laughs" document stops at the budget instead of exhausting memory), and the text
is checked for size before the parser sees it.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import attrs
from ruamel.yaml import YAML
from ruamel.yaml.error import MarkedYAMLError, YAMLError
from ruamel.yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

__all__ = [
    "DEFAULT_MAX_ALIAS_NODES",
    "DEFAULT_MAX_BYTES",
    "Located",
    "Problem",
    "YamlProblems",
    "decode",
    "parse",
]

#: Files larger than this are refused before parsing (1 MiB); ``max_bytes=`` changes it.
#: A workflow is a few kilobytes, and ruamel.yaml's pure-Python parser takes seconds per MiB.
DEFAULT_MAX_BYTES = 1024 * 1024
#: Aliases may repeat at most this many values in all; ``max_alias_nodes=`` changes it.
DEFAULT_MAX_ALIAS_NODES = 100_000
#: Deeper nesting than this is refused (it would only exhaust the interpreter's stack).
MAX_DEPTH = 100

_CORE = "tag:yaml.org,2002:"
_SCALAR_TAGS = {f"{_CORE}{name}" for name in ("str", "int", "float", "bool", "null")}


@attrs.frozen
class Problem:
    """One thing wrong with a workflow file, at a 1-based line and column."""

    file: str
    line: int
    column: int
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.column}: {self.message}"


class YamlProblems(Exception):  # noqa: N818 - internal; becomes WorkflowValidationError
    """Raised by :func:`parse` and :func:`decode` with the problems found."""

    def __init__(self, problems: list[Problem]) -> None:
        super().__init__("\n".join(map(str, problems)))
        self.problems = problems


@attrs.define(eq=False)
class Located:
    """A value of the document with its position; mappings also keep their keys' positions.

    ``value`` is a ``dict[str, Located]``, a ``list[Located]`` or a plain scalar.
    """

    value: Any
    line: int
    column: int
    keys: dict[str, tuple[int, int]] = attrs.field(factory=dict)

    def plain(self) -> Any:
        """The value with every position stripped (dicts, lists and scalars)."""
        if isinstance(self.value, dict):
            return {key: item.plain() for key, item in self.value.items()}
        if isinstance(self.value, list):
            return [item.plain() for item in self.value]
        return self.value

    def items(self) -> Iterator[tuple[str, Located]]:
        """A mapping's entries, in file order."""
        assert isinstance(self.value, dict)
        return iter(self.value.items())


def decode(data: bytes | str, file: str, max_bytes: int) -> str:
    """The text of a file, or the problem: too large, not UTF-8, tabs used for indentation."""
    size = len(data)
    if size > max_bytes:
        raise YamlProblems([Problem(
            file, 1, 1,
            f"the file is {size} bytes, more than the limit of {max_bytes}; a workflow is "
            "usually a few kilobytes: check that this is the right file, or raise the limit "
            "with max_bytes=",
        )])
    if isinstance(data, bytes):
        try:
            text = data.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            line = data.count(b"\n", 0, exc.start) + 1
            column = exc.start - (data.rfind(b"\n", 0, exc.start) + 1) + 1
            raise YamlProblems([Problem(
                file, line, column,
                f"byte 0x{data[exc.start]:02x} is not valid UTF-8; save the file as UTF-8",
            )]) from None
    else:
        text = data
    tabs = [
        Problem(file, number, line.index("\t") + 1,
                "a tab is used for indentation; YAML indents with spaces only: replace the "
                "tab with spaces")
        for number, line in enumerate(text.splitlines(), 1)
        if line[: len(line) - len(line.lstrip(" \t"))].count("\t")
    ]
    if tabs:
        raise YamlProblems(tabs)
    _check_flow_depth(text, file)
    return text


def _check_flow_depth(text: str, file: str) -> None:
    """Refuse flow collections (``[`` ``{``) nested past ``MAX_DEPTH`` before the scanner
    sees them: its look-ahead over nested flow collections takes time quadratic in their depth.

    A cheap over-estimate: brackets inside quotes and comments are skipped, other text counts.
    """
    if text.count("[") + text.count("{") <= MAX_DEPTH:
        return
    depth = 0
    quote = ""
    line, start = 1, 0
    for index, char in enumerate(text):
        if char == "\n":
            line, start = line + 1, index + 1
            if quote == "#":
                quote = ""
        elif quote:
            if char == quote and quote != "#":
                quote = ""
        elif char in "'\"" or (char == "#" and (index == 0 or text[index - 1] in " \t")):
            quote = char
        elif char in "[{":
            depth += 1
            if depth > MAX_DEPTH:
                raise YamlProblems([Problem(file, line, index - start + 1,
                                            f"nested more than {MAX_DEPTH} levels deep")])
        elif char in "]}":
            depth = max(depth - 1, 0)


def parse(
    text: str, file: str, max_alias_nodes: int = DEFAULT_MAX_ALIAS_NODES
) -> Located | None:
    """The document of ``text`` as :class:`Located` values (``None`` when it is empty)."""
    yaml = YAML(typ="safe", pure=True)
    try:
        root = yaml.compose(text)
    except MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, column = (mark.line + 1, mark.column + 1) if mark is not None else (1, 1)
        what = " ".join(part for part in (exc.context, exc.problem) if part)
        raise YamlProblems([Problem(file, line, column,
                                    f"invalid YAML: {what}; fix the syntax here")]) from None
    except YAMLError as exc:
        raise YamlProblems([Problem(file, 1, 1, f"invalid YAML: {exc}")]) from None
    except RecursionError:
        raise YamlProblems([Problem(file, 1, 1, "invalid YAML: nested too deeply")]) from None
    if root is None:
        return None
    _check_aliases(root, file, max_alias_nodes)
    converter = _Converter(yaml, file)
    located = converter.convert(root, 0)
    if converter.problems:
        raise YamlProblems(converter.problems)
    return located


def _check_aliases(root: Node, file: str, limit: int) -> None:
    """Refuse a document whose aliases repeat more than ``limit`` values, before expanding
    anything: sizes are counted once per distinct node (time and memory follow the text)."""
    sizes: dict[int, int] = {}
    seen_twice = False

    def size(node: Node, depth: int) -> int:
        nonlocal seen_twice
        key = id(node)
        known = sizes.get(key)
        if known is not None:
            if known < 0:
                raise _at(file, node, "an alias refers to the value that contains it; YAML "
                                      "that refers to itself cannot be a workflow")
            seen_twice = True
            return known
        if depth > MAX_DEPTH:
            raise _at(file, node, f"nested more than {MAX_DEPTH} levels deep")
        sizes[key] = -1  # in progress
        total = 1
        if isinstance(node, MappingNode):
            total += sum(size(k, depth + 1) + size(v, depth + 1) for k, v in node.value)
        elif isinstance(node, SequenceNode):
            total += sum(size(item, depth + 1) for item in node.value)
        sizes[key] = total
        return total

    expanded = size(root, 0)
    if not seen_twice or expanded - len(sizes) <= limit:
        return
    node = root  # point at the value where the repetition happens: descend while one child
    while True:  # alone repeats too much
        children = (
            [v for _, v in node.value] if isinstance(node, MappingNode)
            else list(node.value) if isinstance(node, SequenceNode) else []
        )
        big = [child for child in children if sizes[id(child)] > limit]
        if not big:
            break
        node = big[0]
    raise _at(file, node, (
        f"aliases (*name) make this document {expanded} values long, more than its own "
        f"{len(sizes)} plus the limit of {limit} repeated values; refused to protect memory "
        "and time (a \"billion laughs\" document): use fewer aliases, or raise the limit with "
        "max_alias_nodes="
    ))


def _at(file: str, node: Node, message: str) -> YamlProblems:
    mark = node.start_mark
    return YamlProblems([Problem(file, mark.line + 1, mark.column + 1, message)])


def _tag(node: Node) -> str:
    tag = node.tag
    return str(getattr(tag, "value", tag))


class _Converter:
    def __init__(self, yaml: YAML, file: str) -> None:
        self._constructor = yaml.constructor
        self._file = file
        self.problems: list[Problem] = []  # the ones worth reporting together

    def _note(self, node: Node, message: str) -> Located:
        self.problems.extend(self._problem(node, message).problems)
        mark = node.start_mark
        return Located(None, mark.line + 1, mark.column + 1)

    def _problem(self, node: Node, message: str) -> YamlProblems:
        return _at(self._file, node, message)

    def convert(self, node: Node, depth: int) -> Located:
        if depth > MAX_DEPTH:
            raise self._problem(node, f"nested more than {MAX_DEPTH} levels deep")
        line, column = node.start_mark.line + 1, node.start_mark.column + 1
        tag = _tag(node)
        if isinstance(node, MappingNode) and tag == f"{_CORE}map":
            return self._mapping(node, depth)
        if isinstance(node, SequenceNode) and tag == f"{_CORE}seq":
            return Located([self.convert(item, depth + 1) for item in node.value], line, column)
        if isinstance(node, ScalarNode) and tag == f"{_CORE}timestamp":
            return Located(str(node.value), line, column)  # dates stay text (JSON data)
        if isinstance(node, ScalarNode) and tag in _SCALAR_TAGS:
            try:
                value = self._constructor.construct_object(node, deep=True)
            except (YAMLError, ValueError, OverflowError) as exc:
                raise self._problem(node, f"invalid {tag[len(_CORE):]} value: {exc}") from None
            return Located(value, line, column)
        shown = tag.replace(_CORE, "!!")
        return self._note(node, (
            f"the tag {shown} is not allowed; a workflow holds plain strings, numbers, "
            "booleans, lists and mappings: remove the tag"
        ))

    def _mapping(self, node: MappingNode, depth: int) -> Located:
        mark = node.start_mark
        result = Located({}, mark.line + 1, mark.column + 1)
        for key_node, value_node in node.value:
            key_line, key_column = key_node.start_mark.line + 1, key_node.start_mark.column + 1
            if _tag(key_node) == f"{_CORE}merge":
                self._note(key_node, "merge keys (<<) are not supported; write the keys out")
                continue
            key = self.convert(key_node, depth + 1).value
            if not isinstance(key, str | int | float | bool) or key is None:
                self._note(key_node, "a key must be a plain string")
                continue
            key = str(key)
            if key in result.value:
                first_line, first_column = result.keys[key]
                self._note(key_node, (
                    f"duplicate key {key!r} (first at line {first_line}, column "
                    f"{first_column}); remove one of them"
                ))
                continue
            result.keys[key] = (key_line, key_column)
            result.value[key] = self.convert(value_node, depth + 1)
        return result
