"""Active/passive high availability through a coordination.k8s.io Lease.

Only the holder of the Lease evaluates detectors and acts on AWS; standby
replicas keep their watches (and so their in-memory registries) warm and take
over when the holder stops renewing. Like client-go, expiry is judged by when
*this* replica last saw the record change, not by the holder's clock, so clock
skew between nodes cannot make two replicas leaders. Every write is a
compare-and-swap on ``resourceVersion``: of two replicas racing for an expired
Lease, the API server lets exactly one win.

Leadership alone is not trusted for AWS calls: the remediation engine also
moves each RemediationAction to Executing with a compare-and-swap, so even a
deposed leader that has not noticed yet cannot execute an action twice.

Sharded, every shard has its own Lease and its own elector. Changing the shard
count changes which shard owns an object, so while replicas of the old layout
still hold Leases, those of the new layout must not start: :class:`LayoutFence`
holds a replica back from *acquiring* while any Lease of the same group but
another shard count is live.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from vigil.adapters import kube
from vigil.domain import sharding

logger = logging.getLogger(__name__)


def _micro(epoch: float) -> str:
    return datetime.datetime.fromtimestamp(epoch, tz=datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclasses.dataclass
class _Observed:
    holder: str
    renew_time: str
    seen_at: float  # our monotonic clock when the record last changed


class LayoutFence:
    """Tells a replica to wait while a Lease of another shard layout of its group is live.

    Liveness is judged like the elector judges expiry: a Lease is live while it has a holder and its
    record changed, as seen by *this* replica, less than its duration ago (a Lease first seen with a
    holder counts as live for one duration). Needs ``list`` on Leases in the Lease namespace; without
    it the fence warns once and stands aside (the old, single-layout behaviour).
    """

    def __init__(self, kube_client: kube.KubeClient, namespace: str, group: str, shards: int,
                 lease_duration: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._kube = kube_client
        self._path = f"/apis/coordination.k8s.io/v1/namespaces/{namespace}/leases"
        self.group = group
        self.shards = shards
        self.lease_duration = lease_duration
        self._clock = clock
        self._observed: dict[str, _Observed] = {}
        self._forbidden = False

    async def __call__(self) -> str | None:
        """Why this replica must not take its Lease now, or None."""
        if self._forbidden:
            return None
        try:
            listed = await self._kube.request("GET", self._path)
        except kube.KubeError as exc:
            if exc.status != 403:
                raise
            self._forbidden = True
            logger.warning("cannot list Leases (%s): a change of the shard count is not fenced", exc)
            return None
        now = self._clock()
        for item in listed.get("items", []):
            name = (item.get("metadata") or {}).get("name", "")
            shards = sharding.layout_of(name, self.group)
            if shards is None or shards == self.shards:
                continue
            spec = item.get("spec") or {}
            holder, renew_time = spec.get("holderIdentity") or "", spec.get("renewTime") or ""
            seen = self._observed.get(name)
            if seen is None or (seen.holder, seen.renew_time) != (holder, renew_time):
                seen = self._observed[name] = _Observed(holder, renew_time, now)
            duration = float(spec.get("leaseDurationSeconds") or self.lease_duration)
            if holder and now - seen.seen_at <= duration:
                return f"lease {name} of the {shards}-shard layout is still held by {holder}"
        return None


class LeaderElector:
    def __init__(
        self,
        kube_client: kube.KubeClient,
        namespace: str,
        name: str,
        identity: str,
        on_change: Callable[[bool], None],
        lease_duration: float = 15.0,
        retry_period: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
        fence: Callable[[], Awaitable[str | None]] | None = None,
        annotations: Callable[[], dict[str, str]] | None = None,
    ) -> None:
        self._kube = kube_client
        #: Written on the Lease with every renewal (the shard's freshness: :mod:`vigil.domain.freshness`).
        self._annotations = annotations
        self._fence = fence
        self._fenced: str | None = None
        self._path = f"/apis/coordination.k8s.io/v1/namespaces/{namespace}/leases"
        self.name = name
        self.identity = identity
        self._on_change = on_change
        self.lease_duration = lease_duration
        self.retry_period = retry_period
        self._clock = clock
        self._observed: _Observed | None = None
        self._last_renew: float | None = None
        self.leader = False

    def _set(self, leader: bool) -> None:
        if leader != self.leader:
            self.leader = leader
            logger.info("%s leadership of lease %s", "acquired" if leader else "lost", self.name)
            self._on_change(leader)

    def _body(self, current: dict[str, Any] | None, now_wall: float, transitions: int) -> dict[str, Any]:
        spec = {
            "holderIdentity": self.identity,
            "leaseDurationSeconds": int(self.lease_duration),
            "renewTime": _micro(now_wall),
            "leaseTransitions": transitions,
        }
        acquire = (current or {}).get("spec", {}).get("acquireTime") if self.leader else None
        spec["acquireTime"] = acquire or _micro(now_wall)
        meta: dict[str, Any] = {"name": self.name}
        if self._annotations is not None:
            meta["annotations"] = self._annotations()
        if current is not None:
            meta["resourceVersion"] = current["metadata"]["resourceVersion"]
        return {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": meta, "spec": spec}

    async def _held_back(self) -> bool:
        """Ask the fence before acquiring (never before renewing: the old layout serves until it is gone)."""
        reason = await self._fence() if self._fence is not None else None
        if reason != self._fenced:
            if reason:
                logger.info("not taking lease %s yet: %s", self.name, reason)
            elif self._fenced:
                logger.info("lease %s: the other shard layout is gone", self.name)
            self._fenced = reason
        return reason is not None

    async def try_acquire_or_renew(self) -> bool:
        """One round of the protocol. Returns whether we hold the Lease afterwards."""
        now = self._clock()
        wall = time.time()
        current = await self._kube.get(f"{self._path}/{self.name}")
        if current is None:
            if await self._held_back():
                return False
            try:
                await self._kube.request("POST", self._path, self._body(None, wall, 0))
            except kube.KubeError as exc:
                if exc.status == 409:
                    return False  # somebody created it first
                raise
            self._last_renew = now
            return True
        spec = current.get("spec") or {}
        holder = spec.get("holderIdentity") or ""
        renew_time = spec.get("renewTime") or ""
        if self._observed is None or (self._observed.holder, self._observed.renew_time) != (holder, renew_time):
            self._observed = _Observed(holder, renew_time, now)
        duration = float(spec.get("leaseDurationSeconds") or self.lease_duration)
        expired = not holder or now - self._observed.seen_at > duration
        if holder != self.identity and not expired:
            return False
        if holder != self.identity and await self._held_back():
            return False
        transitions = int(spec.get("leaseTransitions") or 0) + (0 if holder == self.identity else 1)
        try:
            updated = await self._kube.request(
                "PUT", f"{self._path}/{self.name}", self._body(current, wall, transitions)
            )
        except kube.KubeError as exc:
            if exc.status == 409:
                return False  # lost the race (or our view was old)
            raise
        self._observed = _Observed(self.identity, updated.get("spec", {}).get("renewTime", ""), now)
        self._last_renew = now
        return True

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                held = await self.try_acquire_or_renew()
            except Exception as exc:  # API trouble: keep leading only within the lease we already hold
                logger.warning("lease %s: %r", self.name, exc)
                held = self.leader and self._last_renew is not None and (
                    self._clock() - self._last_renew < self.lease_duration * 2 / 3)
            self._set(held)
            try:
                await asyncio.wait_for(stop.wait(), timeout=self.retry_period)
            except TimeoutError:
                pass
        await self.release()

    async def release(self) -> None:
        """Give the Lease up on shutdown so a standby takes over at once, not after expiry."""
        if not self.leader:
            return
        self._set(False)
        try:
            current = await self._kube.get(f"{self._path}/{self.name}")
            if current and (current.get("spec") or {}).get("holderIdentity") == self.identity:
                body = self._body(current, time.time(), int(current["spec"].get("leaseTransitions") or 0))
                body["spec"]["holderIdentity"] = ""
                await self._kube.request("PUT", f"{self._path}/{self.name}", body)
        except Exception as exc:
            logger.warning("could not release lease %s: %r", self.name, exc)
