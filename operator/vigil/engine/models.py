"""Resolve a detector's model source to a loaded :class:`~vigil.adapters.inference.Scorer`.

ConfigMaps are re-read at most every ``refresh`` seconds per ConfigMap, not
per detector per tick: with thousands of detectors sharing one model, the API
server sees one GET per refresh period. The bytes are then looked up by digest
in the session cache, so an unchanged ConfigMap never reloads the model.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses

from vigil.adapters import inference, kube
from vigil.api.v1alpha1.detector import BUILTIN_MODEL, ModelSource, Reason
from vigil.api.v1alpha1.detector import ModelStatus as ModelStatusModel


@dataclasses.dataclass
class _Fetched:
    at: float
    data: bytes | None
    error: inference.ModelError | None


class ModelResolver:
    def __init__(self, cache: inference.ModelCache, kube_client: kube.KubeClient | None, refresh: float) -> None:
        self._cache = cache
        self._kube = kube_client
        self._refresh = refresh
        self._configmaps: dict[tuple[str, str, str], _Fetched] = {}
        self._builtin: bytes | None = None

    async def resolve(self, namespace: str, source: ModelSource | None, now: float) -> inference.Scorer:
        """The scorer for a detector's ``spec.model``. Raises :class:`inference.ModelError`."""
        source = source or ModelSource()
        if source.config_map_ref is None:
            if self._builtin is None:
                self._builtin = inference.builtin_bytes(source.builtin or BUILTIN_MODEL)
                self._cache.trust(self._builtin)
            return self._cache.get(self._builtin, source.sha256)
        ref = source.config_map_ref
        key = (namespace, ref.name, ref.key)
        fetched = self._configmaps.get(key)
        if fetched is None or now - fetched.at >= self._refresh:
            fetched = await self._fetch(namespace, ref.name, ref.key, now)
            self._configmaps[key] = fetched
        if fetched.error is not None:
            raise fetched.error
        assert fetched.data is not None
        scorer = self._cache.peek(fetched.data, source.sha256)
        if scorer is not None:
            return scorer
        # A new custom model: checks and a trial in a child process, off the event loop.
        return await asyncio.to_thread(self._cache.get, fetched.data, source.sha256)

    async def _fetch(self, namespace: str, name: str, key: str, now: float) -> _Fetched:
        if self._kube is None:
            return _Fetched(now, None, inference.ModelError(Reason.MODEL_NOT_FOUND, "no Kubernetes client"))
        try:
            configmap = await self._kube.get_configmap(namespace, name)
        except kube.KubeError as exc:
            return _Fetched(now, None, inference.ModelError(
                Reason.MODEL_NOT_FOUND, f"cannot read ConfigMap {namespace}/{name}: {exc}"))
        if configmap is None:
            return _Fetched(now, None, inference.ModelError(
                Reason.MODEL_NOT_FOUND, f"ConfigMap {namespace}/{name} not found"))
        binary = configmap.get("binaryData") or {}
        text = configmap.get("data") or {}
        if key in binary:
            try:
                return _Fetched(now, base64.b64decode(binary[key], validate=True), None)
            except ValueError:
                return _Fetched(now, None, inference.ModelError(
                    Reason.MODEL_INVALID, f"ConfigMap {namespace}/{name} binaryData[{key}] is not base64"))
        if key in text:
            return _Fetched(now, None, inference.ModelError(
                Reason.MODEL_INVALID,
                f"ConfigMap {namespace}/{name} has {key!r} under data (text); an ONNX file is binary and "
                "belongs under binaryData (kubectl create configmap --from-file puts it there)",
            ))
        keys = sorted(set(binary) | set(text))
        return _Fetched(now, None, inference.ModelError(
            Reason.MODEL_NOT_FOUND,
            f"ConfigMap {namespace}/{name} has no key {key!r} (keys: {', '.join(keys) or 'none'})"))

    def forget(self, namespace: str, name: str, key: str) -> None:
        self._configmaps.pop((namespace, name, key), None)


def model_status(scorer: inference.Scorer, source: ModelSource | None) -> ModelStatusModel:
    info = scorer.info
    source = source or ModelSource()
    where = (
        f"configmap:{source.config_map_ref.name}/{source.config_map_ref.key}"
        if source.config_map_ref is not None
        else f"builtin:{source.builtin or BUILTIN_MODEL}"
    )
    return ModelStatusModel(
        name=info.name,
        sha256=info.sha256,
        input_signature=info.input_signature,
        feature_version=info.feature_version,
        window=info.window,
        recommended_threshold=info.recommended_threshold,
        source=where,
    )
