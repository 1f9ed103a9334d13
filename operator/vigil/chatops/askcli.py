"""``vigil ask "…"``: Ask Vigil from a terminal, with the user's own kubeconfig (so their RBAC applies).

Only :func:`add_ask` runs when ``vigil`` builds its parser; everything heavy (the kubernetes client,
openai) is imported when the command runs, so ``vigil --help`` stays fast.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any


def _env(name: str, default: str | None = None) -> str | None:
    return os.environ.get(name, default)


def add_llm_flags(p: argparse.ArgumentParser) -> None:
    """The LLM flags, shared with the chat component (``vigil chatops``) so both are configured alike."""
    g = p.add_argument_group("LLM (optional; off unless --llm-base-url and --llm-model are set)")
    g.add_argument("--llm-base-url", default=_env("VIGIL_LLM_BASE_URL"),
                   help="OpenAI-compatible API base URL, e.g. https://api.openai.com/v1, "
                        "https://generativelanguage.googleapis.com/v1beta/openai/, http://localhost:11434/v1 "
                        "(Ollama) [env VIGIL_LLM_BASE_URL]")
    g.add_argument("--llm-model", default=_env("VIGIL_LLM_MODEL"), help="model name [env VIGIL_LLM_MODEL]")
    g.add_argument("--llm-api-key-file", default=_env("VIGIL_LLM_API_KEY_FILE"),
                   help="file holding the API key (mount it from a Secret); local servers may need none "
                        "[env VIGIL_LLM_API_KEY_FILE]")
    g.add_argument("--llm-timeout", type=float, default=30.0, help="seconds per request to the LLM (default 30)")
    g.add_argument("--llm-deadline", type=float, default=90.0, help="seconds per question, all rounds (default 90)")
    g.add_argument("--llm-max-tool-rounds", type=int, default=4,
                   help="rounds of read-only tool calls before the model must answer (default 4)")
    g.add_argument("--llm-max-tokens", type=int, default=800, help="tokens per completion (default 800)")
    g.add_argument("--llm-max-total-tokens", type=int, default=30_000,
                   help="tokens per question, all requests together (default 30000)")
    g.add_argument("--llm-token-field", choices=["max_tokens", "max_completion_tokens"], default="max_tokens",
                   help="how the per-completion limit is sent (OpenAI's reasoning models need "
                        "max_completion_tokens; default max_tokens)")


def llm_config(args: argparse.Namespace) -> Any:
    """The :class:`~vigil.chatops.llm.LLMConfig` from the flags, or None. Raises ValueError (never shows the key)."""
    if not args.llm_base_url and not args.llm_model:
        return None
    if not (args.llm_base_url and args.llm_model):
        raise ValueError("--llm-base-url and --llm-model go together")
    from vigil.chatops import llm

    key = llm.LLMConfig.read_key(args.llm_api_key_file) if args.llm_api_key_file else ""
    return llm.LLMConfig(base_url=args.llm_base_url, model=args.llm_model, api_key=key, timeout=args.llm_timeout,
                         deadline=args.llm_deadline, max_tool_rounds=args.llm_max_tool_rounds,
                         max_tokens=args.llm_max_tokens, max_total_tokens=args.llm_max_total_tokens,
                         token_field=args.llm_token_field)


def add_ask(sub: Any) -> None:
    p = sub.add_parser("ask", help="ask Vigil: status, why <action>, history <policy>, or a question",
                       description="Answer from what Vigil recorded in Kubernetes (read-only, with your kubeconfig). "
                                   "Commands: status [NAMESPACE]; why [NAMESPACE/]ACTION; history "
                                   "[NAMESPACE/]POLICY; anything else is a follow-up question.")
    p.add_argument("question", nargs="+", help="the question, e.g. status, \"why web-scale-out-1a2b-0\"")
    p.add_argument("--kubeconfig", default=None, help="kubeconfig file (default: KUBECONFIG, else ~/.kube/config)")
    p.add_argument("-n", "--namespace", default=None,
                   help="namespace for names given without one (default: the kubeconfig context's)")
    p.add_argument("--conversation", default=None,
                   help="keep a conversation under this key: follow-up questions remember the last subject; "
                        "stored in a ConfigMap (default: none, nothing is written)")
    p.add_argument("--conversation-namespace", default=_env("VIGIL_CHATOPS_NAMESPACE"),
                   help="namespace of the conversation ConfigMaps (default: --namespace, else the kubeconfig's) "
                        "[env VIGIL_CHATOPS_NAMESPACE]")
    p.add_argument("--timeout", type=float, default=10.0, help="seconds per Kubernetes request (default 10)")
    p.add_argument("-o", "--output", choices=["text", "json"], default="text",
                   help="text (default) or json (the answer, the facts, who wrote it, the tool calls)")
    add_llm_flags(p)


def main(args: argparse.Namespace) -> int:
    """Exit 0 with an answer (a degraded one says why on stderr); 1 when Kubernetes cannot be read; 2 for bad
    flags. Every failure is one line, never a traceback, and never the API key."""
    import asyncio
    import logging

    from vigil.adapters import kubeaccess, redaction
    from vigil.chatops import ask, conversation, kubeio

    # The answer's note says what went wrong; log lines would repeat it. Errors only, redacted.
    logging.basicConfig(level=logging.ERROR, format="vigil ask: %(message)s")
    redaction.install()
    for name in ("openai", "httpx", "httpcore"):  # their DEBUG request logs carry headers
        logging.getLogger(name).setLevel(logging.WARNING)
    prog = "vigil ask"
    try:
        config = llm_config(args)
        if not 0 < args.timeout <= 300:
            raise ValueError("--timeout must be in (0, 300] seconds")
    except ValueError as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        return 2
    try:
        access = kubeaccess.load(args.kubeconfig, in_cluster_first=False)
    except kubeaccess.AccessError as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        return 2 if exc.usage else 1
    transport = kubeio.Transport(access, timeout=args.timeout)
    reader = kubeio.ApiReader(transport)
    namespace = args.namespace or access.namespace
    store = None
    if args.conversation is not None:
        store = conversation.ConversationStore(
            kubeio.ConfigMapClient(transport, args.conversation_namespace or namespace))
    asker = ask.Asker(reader, llm_config=config, store=store, default_namespace=namespace)

    async def run() -> ask.Answer:
        try:
            return await asker.ask(" ".join(args.question), conversation=args.conversation,
                                   user=os.environ.get("USER", ""))
        finally:
            await asker.close()

    try:
        answer = asyncio.run(run())
    finally:
        transport.close()
    if args.output == "json":
        print(json.dumps({"text": answer.text, "via": answer.via, "error": answer.error,
                          "toolCalls": list(answer.tool_calls), "subject": answer.subject, "facts": answer.facts},
                         indent=2, default=str))
    else:
        print(answer.text)
    if answer.error:
        print(f"{prog}: note: {answer.error}", file=sys.stderr)
    return 1 if answer.error and answer.error.startswith("I could not read from Kubernetes") else 0
