"""Ask Vigil's settings from the environment, for a component that has no command line of its own to give.

The chat component (``vigil chatops``) builds its Asker with :func:`vigil.chatops.ask.from_environment`,
which reads these variables; the names match ``vigil ask``'s flags (``--llm-base-url`` is
``VIGIL_LLM_BASE_URL``) so a chart sets both the same way. Parsing is pure and refuses a bad value
with a ValueError that names the variable (never the key).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

from vigil.chatops import commands


@dataclasses.dataclass(frozen=True)
class LLMSettings:
    base_url: str
    model: str
    key_file: str | None
    timeout: float = 30.0
    deadline: float = 90.0
    max_tool_rounds: int = 4
    max_tokens: int = 800
    max_total_tokens: int = 30_000
    token_field: str = "max_tokens"


@dataclasses.dataclass(frozen=True)
class AskSettings:
    #: ``why <action>`` without a namespace looks here (VIGIL_ASK_DEFAULT_NAMESPACE).
    default_namespace: str = "default"
    #: What may be read; None: every namespace the credentials may read (VIGIL_ASK_NAMESPACES, comma-separated).
    namespaces: tuple[str, ...] | None = None
    #: Where conversations are kept (VIGIL_CHATOPS_NAMESPACE, else POD_NAMESPACE); None: the credentials'.
    store_namespace: str | None = None
    #: Keep conversations in ConfigMaps (VIGIL_ASK_CONVERSATIONS, default true).
    conversations: bool = True
    #: Seconds per Kubernetes request (VIGIL_ASK_TIMEOUT).
    timeout: float = 10.0
    llm: LLMSettings | None = None


def _number(env: Mapping[str, str], name: str, default: float, low: float, high: float) -> float:
    raw = (env.get(name) or "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"{name}={raw[:40]!r} is not a number") from None
    if not low <= value <= high:
        raise ValueError(f"{name} must be between {low:g} and {high:g}")
    return value


def _namespace(name: str, value: str) -> str:
    if not commands.valid_namespace(value):
        raise ValueError(f"{name}: {value[:64]!r} is not a valid namespace name")
    return value


def from_env(env: Mapping[str, str]) -> AskSettings:
    """The settings in ``env``. Raises ValueError naming the variable at fault."""
    listed = [n.strip() for n in (env.get("VIGIL_ASK_NAMESPACES") or "").split(",") if n.strip()]
    namespaces = tuple(_namespace("VIGIL_ASK_NAMESPACES", n) for n in listed) or None
    default = (env.get("VIGIL_ASK_DEFAULT_NAMESPACE") or "").strip() or (namespaces[0] if namespaces else "default")
    store = (env.get("VIGIL_CHATOPS_NAMESPACE") or env.get("POD_NAMESPACE") or "").strip() or None
    conversations = (env.get("VIGIL_ASK_CONVERSATIONS") or "true").strip().lower() not in ("false", "0", "no", "off")
    base_url = (env.get("VIGIL_LLM_BASE_URL") or "").strip()
    model = (env.get("VIGIL_LLM_MODEL") or "").strip()
    llm = None
    if base_url or model:
        if not (base_url and model):
            raise ValueError("VIGIL_LLM_BASE_URL and VIGIL_LLM_MODEL go together")
        token_field = (env.get("VIGIL_LLM_TOKEN_FIELD") or "max_tokens").strip()
        llm = LLMSettings(
            base_url=base_url, model=model, key_file=(env.get("VIGIL_LLM_API_KEY_FILE") or "").strip() or None,
            timeout=_number(env, "VIGIL_LLM_TIMEOUT", 30.0, 0.1, 600),
            deadline=_number(env, "VIGIL_LLM_DEADLINE", 90.0, 0.1, 1800),
            max_tool_rounds=int(_number(env, "VIGIL_LLM_MAX_TOOL_ROUNDS", 4, 0, 16)),
            max_tokens=int(_number(env, "VIGIL_LLM_MAX_TOKENS", 800, 16, 32_000)),
            max_total_tokens=int(_number(env, "VIGIL_LLM_MAX_TOTAL_TOKENS", 30_000, 16, 10_000_000)),
            token_field=token_field)
    return AskSettings(
        default_namespace=_namespace("VIGIL_ASK_DEFAULT_NAMESPACE", default), namespaces=namespaces,
        store_namespace=_namespace("VIGIL_CHATOPS_NAMESPACE", store) if store else None,
        conversations=conversations, timeout=_number(env, "VIGIL_ASK_TIMEOUT", 10.0, 0.1, 300), llm=llm)
