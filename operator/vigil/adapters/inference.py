"""ONNX Runtime scoring: one session per model digest, checked on load, batched runs.

A model is identified by the SHA-256 of its bytes, so two detectors pointing at
the same ConfigMap content share one session, and a changed ConfigMap loads a
new one. Loading verifies the input signature and the feature contract
(:mod:`vigil.features.contract`) so that a model trained on other features is
refused with a precise reason instead of scoring garbage.
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import importlib.resources
import threading
from typing import Any

import numpy as np
import numpy.typing as npt
import onnxruntime

from vigil import features
from vigil.adapters import model_guard
from vigil.adapters.model_guard import Limits as Limits
from vigil.api.v1alpha1.detector import BUILTIN_MODEL, Reason
from vigil.domain import sensitivity
from vigil.features import contract


class ModelError(Exception):
    """A model that cannot be served, with the condition reason to report."""

    def __init__(self, reason: Reason, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


@dataclasses.dataclass(frozen=True)
class ModelInfo:
    name: str
    sha256: str
    input_signature: str
    feature_version: str
    feature_names: tuple[str, ...]
    window: int
    min_points: int
    recommended_threshold: float
    score_output: str
    score_column: int | None  # None for a [N] output
    #: (sensitivity, threshold) rows measured in training; None = the model ships none.
    sensitivity_table: sensitivity.Table | None = None
    #: Per feature name, (logit coefficient, typical value): linear models that explain themselves.
    contributions: tuple[tuple[str, float, float], ...] | None = None


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def builtin_bytes(name: str = BUILTIN_MODEL) -> bytes:
    """The bytes of a model shipped inside the package."""
    if name != BUILTIN_MODEL:
        raise ModelError(Reason.MODEL_NOT_FOUND, f"no built-in model named {name!r}; only {BUILTIN_MODEL!r}")
    resource = importlib.resources.files("vigil") / "models" / f"{name}.onnx"
    try:
        return resource.read_bytes()
    except FileNotFoundError as exc:
        raise ModelError(Reason.MODEL_NOT_FOUND, f"the built-in model {name!r} is missing from the package") from exc


def _shape_text(shape: list[Any]) -> str:
    return ",".join("N" if not isinstance(d, int) else str(d) for d in shape)


def _verify(session: onnxruntime.InferenceSession, sha: str) -> ModelInfo:
    meta: dict[str, str] = dict(session.get_modelmeta().custom_metadata_map)
    missing = [key for key in contract.REQUIRED_METADATA if key not in meta]
    if missing:
        raise ModelError(
            Reason.MODEL_SIGNATURE_MISMATCH,
            f"model metadata lacks {', '.join(missing)}; export it with Vigil's feature contract",
        )
    inputs = session.get_inputs()
    if len(inputs) != 1:
        raise ModelError(Reason.MODEL_SIGNATURE_MISMATCH, f"model has {len(inputs)} inputs, expected 1")
    model_input = inputs[0]
    version = meta[contract.META_FEATURE_VERSION]
    names = tuple(meta[contract.META_FEATURE_NAMES].split(","))
    if version not in features.COMPATIBLE_VERSIONS:
        raise ModelError(
            Reason.MODEL_SIGNATURE_MISMATCH,
            f"model was trained on features v{version} ({len(names)} features); this operator computes "
            f"v{features.FEATURE_VERSION}",
        )
    try:
        index = features.columns(names)
        if max(index) >= features.COMPATIBLE_VERSIONS[version]:
            # An older version's columns are a prefix of the newer list, defined unchanged.
            raise ValueError(f"{version} has no feature {features.FEATURE_NAMES[max(index)]}")
    except ValueError as exc:
        raise ModelError(Reason.MODEL_SIGNATURE_MISMATCH,
                         f"model metadata {contract.META_FEATURE_NAMES}: {exc}") from exc
    n_features = len(names)
    signature = f"{model_input.name}: {model_input.type}[{_shape_text(model_input.shape)}]"
    if model_input.name != contract.INPUT_NAME or model_input.type != "tensor(float)":
        raise ModelError(
            Reason.MODEL_SIGNATURE_MISMATCH,
            f"model input is {signature}; expected {contract.INPUT_NAME}: tensor(float)[N,{n_features}]",
        )
    shape = model_input.shape
    if len(shape) != 2 or (isinstance(shape[1], int) and shape[1] != n_features):
        raise ModelError(
            Reason.MODEL_SIGNATURE_MISMATCH,
            f"model input is {signature}; expected [N,{n_features}], one column per name in "
            f"{contract.META_FEATURE_NAMES}",
        )
    try:
        window = int(meta[contract.META_WINDOW])
        min_points = int(meta.get(contract.META_MIN_POINTS, features.MIN_POINTS))
        threshold = float(meta.get(contract.META_RECOMMENDED_THRESHOLD, "0.5"))
        column_text = meta.get(contract.META_SCORE_COLUMN, "1")
    except ValueError as exc:
        raise ModelError(Reason.MODEL_INVALID, f"bad model metadata: {exc}") from exc
    if window != features.WINDOW:
        raise ModelError(
            Reason.MODEL_SIGNATURE_MISMATCH,
            f"model window is {window} points; the feature module computes {features.WINDOW}",
        )
    if not 0.0 <= threshold <= 1.0:
        raise ModelError(Reason.MODEL_INVALID, f"recommended threshold {threshold} is outside [0, 1]")
    output_name = meta.get(contract.META_SCORE_OUTPUT, contract.DEFAULT_SCORE_OUTPUT)
    outputs = {o.name: o for o in session.get_outputs()}
    if output_name not in outputs:
        raise ModelError(
            Reason.MODEL_SIGNATURE_MISMATCH,
            f"model has no output {output_name!r} (it has {', '.join(sorted(outputs))})",
        )
    out_shape = outputs[output_name].shape
    column: int | None = int(column_text) if len(out_shape) == 2 else None
    table = None
    if contract.META_SENSITIVITY_TABLE in meta:
        try:
            table = sensitivity.parse_table(meta[contract.META_SENSITIVITY_TABLE])
        except ValueError as exc:
            raise ModelError(Reason.MODEL_INVALID, f"bad model metadata {contract.META_SENSITIVITY_TABLE}: {exc}") \
                from exc
    return ModelInfo(
        name=meta.get(contract.META_MODEL_NAME, f"sha256:{sha[:12]}"),
        sha256=sha,
        input_signature=signature,
        feature_version=version,
        feature_names=names,
        window=window,
        min_points=min_points,
        recommended_threshold=threshold,
        score_output=output_name,
        score_column=column,
        sensitivity_table=table,
        contributions=_contributions(meta, names),
    )


def _contributions(meta: dict[str, str], names: tuple[str, ...]) -> tuple[tuple[str, float, float], ...] | None:
    """The linear explanation metadata, checked against the model's feature names; None if absent.

    Malformed explanation metadata is ignored (the model still scores; verdicts just come
    without reasons) rather than refused: it cannot change a score.
    """
    if contract.META_COEFFICIENTS not in meta or contract.META_TYPICAL not in meta:
        return None
    try:
        coef = _pairs(meta[contract.META_COEFFICIENTS])
        typical = _pairs(meta[contract.META_TYPICAL])
    except ValueError:
        return None
    if set(coef) - set(names) or set(typical) - set(names) or not coef:
        return None
    return tuple((n, coef[n], typical.get(n, 0.0)) for n in names if n in coef)


def _pairs(text: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for part in text.split(",")[: len(features.FEATURE_NAMES)]:
        name, _, value = part.partition(":")
        number = float(value)
        if not np.isfinite(number):
            raise ValueError(f"{name}: not finite")
        out[name] = number
    return out


def check(data: bytes, limits: Limits | None = None) -> None:
    """The static model checks of :mod:`vigil.adapters.model_guard`, as a :class:`ModelError`."""
    try:
        model_guard.check_bytes(data, limits or Limits())
    except model_guard.GuardError as exc:
        raise ModelError(exc.reason, exc.message) from exc


def trial(data: bytes, limits: Limits | None = None) -> None:
    """Load and score ``data`` in a limited child process (see :func:`model_guard.trial`)."""
    try:
        model_guard.trial(data, limits or Limits())
    except model_guard.GuardError as exc:
        raise ModelError(exc.reason, exc.message) from exc


class Scorer:
    """One loaded model. ``score`` takes a whole batch; call it once per tick per model.

    The static checks run first, so onnxruntime never parses a model with external data or
    unknown operator domains. The trial in a child process is :class:`ModelCache`'s job."""

    def __init__(self, data: bytes, limits: Limits | None = None) -> None:
        sha = digest(data)
        check(data, limits)
        options = onnxruntime.SessionOptions()
        # Only the ONNX format (never ORT format guessed from bytes), and no allocators shared through
        # the environment. onnxruntime has no option that stops a model loaded from bytes from reading
        # external data relative to the working directory: model_guard refuses such models instead.
        options.add_session_config_entry("session.load_model_format", "ONNX")
        options.add_session_config_entry("session.use_env_allocators", "0")
        # The operator scores small batches often; threads would only fight the event loop.
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        try:
            self._session = onnxruntime.InferenceSession(data, options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own Fail/InvalidProtobuf/... types
            raise ModelError(Reason.MODEL_INVALID, f"not a loadable ONNX model: {str(exc)[:300]}") from exc
        self.info = _verify(self._session, sha)
        self._lock = threading.Lock()
        # Prove the model runs before any detector relies on it.
        self.score(np.zeros((1, len(self.info.feature_names)), dtype=np.float32))

    def score(self, rows: npt.NDArray[np.float32]) -> npt.NDArray[np.float64]:
        """P(anomaly) for each row of features, clipped to [0, 1]."""
        if rows.shape[0] == 0:
            return np.empty(0)
        try:
            (out,) = self._session.run([self.info.score_output], {contract.INPUT_NAME: rows})
        except Exception as exc:
            raise ModelError(Reason.MODEL_INVALID, f"model failed to run: {str(exc)[:300]}") from exc
        values = np.asarray(out, dtype=np.float64)
        if self.info.score_column is not None:
            values = values[:, self.info.score_column]
        values = values.reshape(-1)
        if values.shape[0] != rows.shape[0] or not np.all(np.isfinite(values)):
            raise ModelError(Reason.MODEL_INVALID, "model returned a wrong number of scores or non-finite ones")
        return np.clip(values, 0.0, 1.0)


class ModelCache:
    """Sessions by digest, least recently used evicted. Load failures are cached too,
    so a broken ConfigMap costs one load attempt per content, not one per tick."""

    def __init__(self, capacity: int = 16, limits: Limits | None = None) -> None:
        self._capacity = capacity
        self.limits = limits or Limits()
        self._trusted: set[str] = set()
        self._loading: dict[str, threading.Lock] = {}
        self._entries: collections.OrderedDict[str, Scorer | ModelError] = collections.OrderedDict()
        self._digests: dict[int, tuple[bytes, str]] = {}
        self._lock = threading.Lock()
        self.loads = 0

    def _digest(self, data: bytes) -> str:
        """sha256 of ``data``, remembered per bytes object: every evaluation resolves its model, and
        the resolver hands over the same object until the model changes (36 us a call saved)."""
        with self._lock:
            known = self._digests.get(id(data))
        if known is not None and known[0] is data:
            return known[1]
        sha = digest(data)
        with self._lock:
            if len(self._digests) >= 4 * self._capacity:
                self._digests.clear()
            self._digests[id(data)] = (data, sha)  # holding ``data`` keeps its id from being reused
        return sha

    def trust(self, data: bytes) -> None:
        """Skip the child-process trial for these bytes (the built-in model shipped in the package)."""
        self._trusted.add(self._digest(data))

    def peek(self, data: bytes, expected_sha256: str | None = None) -> Scorer | None:
        """The cached scorer (or cached error, raised) for ``data``; None when it still has to be loaded,
        which may take a trial in a child process: call :meth:`get` off the event loop then."""
        sha = self._digest(data)
        self._pinned(sha, expected_sha256)
        with self._lock:
            entry = self._entries.get(sha)
            if entry is not None:
                self._entries.move_to_end(sha)
        if isinstance(entry, ModelError):
            raise entry
        return entry

    @staticmethod
    def _pinned(sha: str, expected_sha256: str | None) -> None:
        if expected_sha256 is not None and sha != expected_sha256:
            raise ModelError(
                Reason.MODEL_DIGEST_MISMATCH,
                f"model sha256 is {sha}, but spec.model.sha256 pins {expected_sha256}",
            )

    def get(self, data: bytes, expected_sha256: str | None = None) -> Scorer:
        sha = self._digest(data)
        self._pinned(sha, expected_sha256)
        with self._lock:
            entry = self._entries.get(sha)
            if entry is not None:
                self._entries.move_to_end(sha)
            loading = self._loading.setdefault(sha, threading.Lock()) if entry is None else None
        if loading is not None:
            with loading:  # detectors sharing a new model wait for one trial, not one each
                with self._lock:
                    entry = self._entries.get(sha)
                if entry is None:
                    entry = self._load(data, sha)
            with self._lock:
                self._loading.pop(sha, None)
        assert entry is not None
        if isinstance(entry, ModelError):
            raise entry
        return entry

    def _load(self, data: bytes, sha: str) -> Scorer | ModelError:
        self.loads += 1
        entry: Scorer | ModelError
        try:
            # Cheap static checks first; then the trial in a limited child process; only a model
            # that passed both is loaded into this process.
            check(data, self.limits)
            if self.limits.trial and sha not in self._trusted:
                trial(data, self.limits)
            entry = Scorer(data, self.limits)
        except ModelError as exc:
            entry = exc
        with self._lock:
            self._entries[sha] = entry
            while len(self._entries) > self._capacity:
                self._entries.popitem(last=False)
        return entry
