"""Who may decide from chat: chat user and group ids mapped to the Kubernetes identity that decides.

A chat id proves only that Slack or Discord vouched for a person; what that person may do is
Kubernetes RBAC's call. So the ChatOps component never decides on its own authority: it maps the
chat user to a Kubernetes user and groups and *impersonates* them, and the API server (RBAC, the
chart's admission policy, the audit log) judges the request as if that identity had sent it. A
chat user found in no rule is refused before anything is sent.

The map is a file (a mounted ConfigMap), YAML or JSON::

    slack:
      - user: U012ABCDEF                # a Slack user id
        as: {user: alice@example.com, groups: [sre]}
      - group: S0123ABCD                # a Slack user group (subteam) id
        as: {user: chatops-sre, groups: [vigil-approvers]}
    discord:
      - user: "80351110224678912"       # a Discord user id (a snowflake: quote it)
        as: {user: bob@example.com}
      - role: "41771983423143936"       # a Discord guild role id
        as: {user: chatops-oncall, groups: [vigil-approvers]}

A rule naming the user wins over a group or role rule; among group or role rules the first in
the file wins. Parsing is strict (unknown keys, empty names, ``system:`` identities are errors)
because a typo here silently changes who may approve. Pure: no I/O but :func:`load`.
"""

from __future__ import annotations

import dataclasses
import enum
import pathlib
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import yaml

#: The map is read whole into memory: refuse anything larger.
MAX_MAP_BYTES = 256 * 1024
#: Rules per platform, groups per identity: enough for any team, small enough to check quickly.
MAX_RULES = 1000
MAX_GROUPS = 32
#: Kubernetes user and group names are free strings; keep them to what a header and an annotation carry well.
MAX_NAME = 253
#: Slack ids (U…, W…, S…) and Discord snowflakes are short alphanumerics.
_CHAT_ID = re.compile(r"^[A-Za-z0-9]{1,32}$")
_K8S_NAME = re.compile(r"^[^\s,\x00-\x1f\x7f]{1,253}$")


class Platform(enum.StrEnum):
    SLACK = "slack"
    DISCORD = "discord"


#: The key of a group rule on each platform: Slack has user groups, Discord guild roles.
GROUP_KEYS = {Platform.SLACK: "group", Platform.DISCORD: "role"}


class MapError(ValueError):
    """The identity map is malformed; the message says where."""


@dataclasses.dataclass(frozen=True)
class Identity:
    """The Kubernetes identity a chat user decides as (``Impersonate-User`` / ``Impersonate-Group``)."""

    user: str
    groups: tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True)
class Rule:
    platform: Platform
    identity: Identity
    user: str | None = None
    group: str | None = None


@dataclasses.dataclass(frozen=True)
class IdentityMap:
    rules: tuple[Rule, ...] = ()

    def resolve(self, platform: Platform, user_id: str, groups: Iterable[str] = ()) -> Identity | None:
        """The identity of ``user_id`` (a member of ``groups``) on ``platform``, or None: refuse."""
        mine = [r for r in self.rules if r.platform == platform]
        for rule in mine:
            if rule.user is not None and rule.user == user_id:
                return rule.identity
        member = set(groups)
        for rule in mine:
            if rule.group is not None and rule.group in member:
                return rule.identity
        return None

    def groups(self, platform: Platform) -> tuple[str, ...]:
        """The group (role) ids that appear in rules: the only memberships worth looking up."""
        return tuple(r.group for r in self.rules if r.platform == platform and r.group is not None)

    def users(self) -> tuple[str, ...]:
        """Every Kubernetes user impersonated, sorted (the chart's RBAC ``resourceNames``)."""
        return tuple(sorted({r.identity.user for r in self.rules}))

    def all_groups(self) -> tuple[str, ...]:
        """Every Kubernetes group impersonated, sorted."""
        return tuple(sorted({g for r in self.rules for g in r.identity.groups}))


def _name(value: Any, where: str) -> str:
    if not isinstance(value, str) or not _K8S_NAME.match(value):
        raise MapError(f"{where}: must be a non-empty name without spaces, commas or control characters "
                       f"(at most {MAX_NAME} characters)")
    if value.startswith("system:"):
        raise MapError(f"{where}: {value!r} is a system: identity; chat users may not act as one")
    return value


def _chat_id(value: Any, where: str) -> str:
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str) or not _CHAT_ID.match(value):
        raise MapError(f"{where}: must be a chat id (letters and digits, at most 32)")
    return value


def _identity(value: Any, where: str) -> Identity:
    if not isinstance(value, Mapping):
        raise MapError(f"{where}: must be a mapping with user and optional groups")
    unknown = set(value) - {"user", "groups"}
    if unknown:
        raise MapError(f"{where}: unknown keys {sorted(unknown)}")
    groups = value.get("groups") or []
    if not isinstance(groups, list) or len(groups) > MAX_GROUPS:
        raise MapError(f"{where}.groups: must be a list of at most {MAX_GROUPS} names")
    return Identity(_name(value.get("user"), f"{where}.user"),
                    tuple(_name(g, f"{where}.groups[{i}]") for i, g in enumerate(groups)))


def _rules(platform: Platform, entries: Any) -> list[Rule]:
    if entries is None:
        return []
    if not isinstance(entries, list) or len(entries) > MAX_RULES:
        raise MapError(f"{platform.value}: must be a list of at most {MAX_RULES} rules")
    group_key = GROUP_KEYS[platform]
    rules = []
    for i, entry in enumerate(entries):
        where = f"{platform.value}[{i}]"
        if not isinstance(entry, Mapping):
            raise MapError(f"{where}: must be a mapping")
        unknown = set(entry) - {"user", group_key, "as"}
        if unknown:
            raise MapError(f"{where}: unknown keys {sorted(unknown)} (expected user or {group_key}, and as)")
        if ("user" in entry) == (group_key in entry):
            raise MapError(f"{where}: name exactly one of user or {group_key}")
        identity = _identity(entry.get("as"), f"{where}.as")
        if "user" in entry:
            rules.append(Rule(platform, identity, user=_chat_id(entry["user"], f"{where}.user")))
        else:
            rules.append(Rule(platform, identity, group=_chat_id(entry[group_key], f"{where}.{group_key}")))
    return rules


def parse(data: Any) -> IdentityMap:
    """The map from its decoded YAML/JSON. Raises :class:`MapError`."""
    if data is None:
        return IdentityMap()
    if not isinstance(data, Mapping):
        raise MapError("the identity map must be a mapping with slack and/or discord lists")
    unknown = set(data) - {p.value for p in Platform}
    if unknown:
        raise MapError(f"unknown keys {sorted(unknown)} (expected slack, discord)")
    rules: list[Rule] = []
    for platform in Platform:
        rules.extend(_rules(platform, data.get(platform.value)))
    return IdentityMap(tuple(rules))


def parse_text(text: str) -> IdentityMap:
    try:
        data = yaml.safe_load(text) if text.strip() else None
    except yaml.YAMLError as exc:
        raise MapError(f"not YAML or JSON: {str(exc).splitlines()[0]}") from None
    return parse(data)


def load(path: str | pathlib.Path) -> IdentityMap:
    """Read and parse the map file. Raises :class:`MapError` (missing, too large, malformed)."""
    file = pathlib.Path(path)
    try:
        size = file.stat().st_size
        if size > MAX_MAP_BYTES:
            raise MapError(f"{file}: {size} bytes, more than the {MAX_MAP_BYTES} allowed")
        text = file.read_text(encoding="utf-8")
    except OSError as exc:
        raise MapError(f"{file}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise MapError(f"{file}: not UTF-8") from None
    try:
        return parse_text(text)
    except MapError as exc:
        raise MapError(f"{file}: {exc}") from None


def member_groups(platform: Platform, candidates: Sequence[str], identity_map: IdentityMap) -> tuple[str, ...]:
    """Of ``candidates`` (a user's roles), only those the map names: nothing else is kept or logged."""
    named = set(identity_map.groups(platform))
    return tuple(g for g in candidates if g in named)
