"""HTML built from elements, never from strings: every text and attribute value is escaped.

Labels, annotations, Event messages and chat answers are written by whoever can create a series or
an object, so they are hostile. Pages are composed with :func:`el`, which escapes every child that is
not already :class:`Markup` and every attribute value; nothing else in the dashboard makes a
:class:`Markup` from text, so no value can open a tag.
"""

from __future__ import annotations

import html
import re
from collections.abc import Iterable
from typing import Union

#: Tag and attribute names are ours, never data; this refuses a typo that would make them unsafe.
_NAME = re.compile(r"^[a-z][a-z0-9-]*$")

#: HTML elements without a closing tag.
_VOID = frozenset({"br", "hr", "img", "input", "link", "meta"})
#: SVG shapes written self-closed: inside <svg> an unclosed ``<line>`` would swallow the next shape as its child.
_SVG_EMPTY = frozenset({"circle", "line", "path", "polyline", "rect"})


class Markup(str):
    """Text that is already HTML (made only by :func:`el`, :func:`join` and :func:`raw_document`)."""


Child = Union["Markup", str, int, float, None, Iterable["Child"]]


def escape(value: object) -> Markup:
    """``value`` as HTML text: quotes included, so the result is safe in text and in attributes."""
    if isinstance(value, Markup):
        return value
    return Markup(html.escape(str(value), quote=True))


def _children(children: Iterable[Child]) -> str:
    parts: list[str] = []
    for child in children:
        if child is None or child is False:
            continue
        if isinstance(child, (str, int, float)):
            parts.append(escape(child))
        else:
            parts.append(_children(child))
    return "".join(parts)


def join(*children: Child) -> Markup:
    """Several children as one fragment."""
    return Markup(_children(children))


def el(tag: str, *children: Child, **attributes: object) -> Markup:
    """``<tag attributes>children</tag>``. Attribute names: ``class_`` for class, ``_`` for ``-``.

    An attribute whose value is None or False is left out; True writes it bare.
    """
    if not _NAME.match(tag):
        raise ValueError(f"not a tag name: {tag!r}")
    rendered = []
    for key, value in attributes.items():
        name = key.rstrip("_").replace("_", "-")
        if not _NAME.match(name):
            raise ValueError(f"not an attribute name: {name!r}")
        if value is None or value is False:
            continue
        rendered.append(f" {name}" if value is True else f' {name}="{escape(value)}"')
    opening = f"<{tag}{''.join(rendered)}>"
    if tag in _VOID and not children:
        return Markup(opening)
    if tag in _SVG_EMPTY and not children:
        return Markup(f"<{tag}{''.join(rendered)}/>")
    return Markup(f"{opening}{_children(children)}</{tag}>")


def raw_document(body: Markup) -> Markup:
    """The doctype in front of a page: the one piece of HTML not built by :func:`el`."""
    return Markup("<!DOCTYPE html>\n" + body)
