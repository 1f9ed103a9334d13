"""Which RemediationActions the operator itself proposed (pure).

Anyone who may create a RemediationAction could otherwise hand the operator a
decision to carry out. Three marks together say "the operator wrote this":

* a controller ownerReference to the policy, with the policy's current UID
  (a policy deleted and re-created under the same name does not inherit it);
* ``spec.policyRef.uid`` equal to that UID;
* the ``vigil.dev/provenance`` annotation: an HMAC-SHA256 over the action's
  namespace, name and spec, keyed by a secret only the operator holds
  (``--provenance-key-file``, a Secret the chart generates). Without a key the
  annotation is a plain SHA-256, which proves nothing against a forger who can
  compute it: then only the chart's ValidatingAdmissionPolicy (which lets
  nobody but the operator's ServiceAccount create actions or set the
  annotation) makes the mark trustworthy. docs/security.md says so.

Whatever the marks say, the execution-time check (:mod:`.preflight`) re-derives
everything from the current policy, so a forged action is never more powerful
than the operator's own next step.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Mapping, Sequence
from typing import Any

ANNOTATION = "vigil.dev/provenance"
_HMAC = "hmac-sha256:"
_PLAIN = "sha256:"


def _message(namespace: str, name: str, spec: Mapping[str, Any]) -> bytes:
    return json.dumps([namespace, name, spec], sort_keys=True, separators=(",", ":")).encode()


def sign(key: bytes | None, namespace: str, name: str, spec: Mapping[str, Any]) -> str:
    message = _message(namespace, name, spec)
    if key:
        return _HMAC + hmac.new(key, message, hashlib.sha256).hexdigest()
    return _PLAIN + hashlib.sha256(message).hexdigest()


def problems(key: bytes | None, namespace: str, name: str, spec: Mapping[str, Any],
             annotations: Mapping[str, str], owner_references: Sequence[Mapping[str, Any]],
             policy_uid: str, spec_policy_uid: str) -> list[str]:
    """Why this action cannot be the operator's own (empty: it is)."""
    found = []
    owners = [o for o in owner_references if o.get("controller") and o.get("kind") == "RemediationPolicy"]
    if not owners or owners[0].get("uid") != policy_uid:
        found.append("it is not controlled by the current RemediationPolicy (ownerReference UID)")
    if spec_policy_uid != policy_uid:
        found.append("spec.policyRef.uid is not the policy's UID")
    mark = annotations.get(ANNOTATION, "")
    if not hmac.compare_digest(mark, sign(key, namespace, name, spec)):
        found.append(f"annotation {ANNOTATION} is missing or does not match"
                     + (" (signed with another key?)" if mark.startswith(_HMAC) and key else ""))
    return found
