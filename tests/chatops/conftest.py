"""Fixtures for Ask Vigil: the recorded incident, a reader on the API server, and the LLM peer.

The API server is the ``kubeapi`` fixture: the emulator by default, the real kube-apiserver with
``VIGIL_TEST_KUBE=real``. The LLM is the scripted local server (tests/chatops/llm_server.py), or a real
provider when ``VIGIL_TEST_LLM_BASE_URL``, ``VIGIL_TEST_LLM_MODEL`` (and ``VIGIL_TEST_LLM_KEY``) are set:
then the assertions that depend on the script are skipped and the rest run unchanged.
"""

from __future__ import annotations

import os
import pathlib
from collections.abc import Iterator

import pytest

from tests.chatops import incident
from vigil.adapters import kubeaccess
from vigil.chatops import kubeio
from vigil.chatops.llm import LLMConfig
from vigil.sandbox.kubeapi import KubeAPIServer

REAL_LLM_URL = os.environ.get("VIGIL_TEST_LLM_BASE_URL", "")
REAL_LLM_MODEL = os.environ.get("VIGIL_TEST_LLM_MODEL", "")
REAL_LLM_KEY = os.environ.get("VIGIL_TEST_LLM_KEY", "")
#: True when the tests talk to a real provider: scripted-only assertions are skipped.
REAL_LLM = bool(REAL_LLM_URL and REAL_LLM_MODEL)

#: The fake key the scripted tests send: it must reach the server as a Bearer token and nowhere else.
FAKE_KEY = "sk-test-DO-NOT-LEAK-0123456789abcdef"


@pytest.fixture
def recorded(kubeapi: KubeAPIServer) -> incident.Incident:
    return incident.seed(kubeapi, "default")


@pytest.fixture
def transport(kubeapi: KubeAPIServer, tmp_path: pathlib.Path) -> Iterator[kubeio.Transport]:
    config = kubeapi.write_kubeconfig(tmp_path / "kubeconfig")
    opened = kubeio.Transport(kubeaccess.load(str(config), in_cluster_first=False), timeout=10)
    yield opened
    opened.close()


@pytest.fixture
def reader(transport: kubeio.Transport) -> kubeio.ApiReader:
    return kubeio.ApiReader(transport)


def writes(kubeapi: KubeAPIServer, plural: str | None = None) -> int:
    """Requests that change something (create, update, patch, delete), of ``plural`` or of anything."""
    return sum(kubeapi.count_requests(method=method, plural=plural) for method in ("POST", "PUT", "PATCH", "DELETE"))


def real_llm_config(**budgets: object) -> LLMConfig:
    return LLMConfig(base_url=REAL_LLM_URL, model=REAL_LLM_MODEL, api_key=REAL_LLM_KEY, **budgets)  # type: ignore[arg-type]
