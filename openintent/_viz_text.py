"""Escaping of user text for the pictures of :mod:`._viz`: one function per place a title
can go, so that no title can break out of it."""

from __future__ import annotations

import json
import unicodedata

__all__ = ["dot_string", "front_matter", "gantt_text", "mermaid_text"]

_MERMAID_SAFE = frozenset(" -_.,:()/'!?+*=@$[]")


def mermaid_text(text: str) -> str:
    """``text`` for inside a double-quoted Mermaid label: letters, digits and a few
    punctuation marks as they are, line breaks as ``<br/>``, everything else (quotes, ``#``,
    ``<``, ``;``, backticks, emoji) as an entity code, control characters as spaces."""
    out = []
    for char in text.replace("\r\n", "\n").replace("\r", "\n"):
        if char == "\n":
            out.append("<br/>")
        elif char.isalnum() or char in _MERMAID_SAFE:
            out.append(char)
        elif unicodedata.category(char) == "Cc":
            out.append(" ")
        else:
            out.append(f"#{ord(char)};")
    return "".join(out)


def _yaml_string(text: str) -> str:
    """A one-line YAML double-quoted scalar (JSON's string syntax is valid YAML)."""
    quoted = json.dumps(" ".join(text.splitlines()) or " ", ensure_ascii=False)
    return quoted.replace("\u2028", "\\u2028").replace("\u2029", "\\u2029")


def front_matter(title: str) -> list[str]:
    return ["---", f"title: {_yaml_string(title)}", "---"]


def dot_string(text: str) -> str:
    """``text`` as a DOT double-quoted string: ``\\`` and ``"`` escaped, line breaks as
    ``\\n``, control characters as spaces."""
    out = ['"']
    for char in text.replace("\r\n", "\n").replace("\r", "\n"):
        if char in '\\"':
            out.append("\\" + char)
        elif char == "\n":
            out.append("\\n")
        elif unicodedata.category(char) == "Cc":
            out.append(" ")
        else:
            out.append(char)
    out.append('"')
    return "".join(out)


_GANTT_REPLACEMENTS = str.maketrans({":": "꞉", "#": "＃", ";": "；", "%": "％"})


def gantt_text(text: str) -> str:
    """A Gantt task or section name: one line, with the characters Mermaid's Gantt syntax
    reserves there (``:``, ``#``, ``;``, ``%``) replaced by look-alikes."""
    flat = "".join(" " if unicodedata.category(char) == "Cc" else char for char in text)
    return " ".join(flat.split()).translate(_GANTT_REPLACEMENTS) or "-"
