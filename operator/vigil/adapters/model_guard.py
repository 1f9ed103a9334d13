"""Checks a custom model must pass before onnxruntime sees it in the operator's process.

A model comes from a namespace user's ConfigMap and is hostile until proven otherwise:

* Static (:func:`check_bytes`): a minimal, bounded walk of the ModelProto protobuf (``onnx`` is
  a training-only dependency, so the operator image does not have it). It refuses any tensor with
  external data (``external_data`` or ``data_location = EXTERNAL``) wherever it sits (graph
  initializers, sparse initializers, attribute tensors, subgraphs, functions, training info),
  node or opset domains outside ``""``/``ai.onnx``/``ai.onnx.ml``, serialized models over
  ``max_bytes``, initializers with more than ``max_elements`` elements, and ConstantOfShape nodes
  whose constant shape input asks for more than ``max_elements``. Field numbers were checked
  against onnx.proto (onnx 1.x): see ``_SCHEMA``.
* Trial (:func:`trial`): the model is loaded and run on a zero batch in a child process with
  ``RLIMIT_AS`` and ``RLIMIT_CPU`` and a wall-clock timeout, so a model that would allocate
  gigabytes or compute for seconds is refused without touching the operator's memory or event loop.

Both raise :class:`~vigil.adapters.inference.ModelError`-compatible (reason, message) pairs through
:class:`GuardError`; the caller converts them.
"""

from __future__ import annotations

import dataclasses
import json
import os
import resource
import signal
import struct
import subprocess
import sys

from vigil.api.v1alpha1.detector import Reason

ALLOWED_DOMAINS = frozenset({"", "ai.onnx", "ai.onnx.ml"})
MAX_DEPTH = 64  # nesting of messages; real models use < 20


@dataclasses.dataclass(frozen=True)
class Limits:
    max_bytes: int = 1 << 20
    """Largest serialized model accepted (``vigil run --max-model-bytes``)."""
    max_elements: int = 1 << 24
    """Largest initializer or constant ConstantOfShape output, in elements (16 Mi)."""
    trial: bool = True
    """Load and run a model in a limited child process before admitting it."""
    trial_memory: int = 1 << 30
    """RLIMIT_AS of the trial process (bytes of address space, onnxruntime included)."""
    trial_timeout: float = 10.0
    """Seconds the trial may take, start-up included."""
    trial_rows: int = 64
    """Rows of zeros the trial scores (a typical batch)."""


class GuardError(Exception):
    def __init__(self, reason: Reason, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


# Message types and the fields we descend into or read. Each entry: field -> (kind, child type).
# Kinds: "msg" (embedded message), "str" (string to remember), "int" (varint to remember),
# "ints" (repeated int64, packed or not). Fields not listed are skipped by wire type.
_SCHEMA: dict[str, dict[int, tuple[str, str]]] = {
    "Model": {7: ("msg", "Graph"), 8: ("msg", "OpsetId"), 20: ("msg", "TrainingInfo"), 25: ("msg", "Function")},
    "OpsetId": {1: ("str", "")},
    "TrainingInfo": {1: ("msg", "Graph"), 2: ("msg", "Graph")},
    "Function": {7: ("msg", "Node"), 9: ("msg", "OpsetId"), 11: ("msg", "Attribute")},
    "Graph": {1: ("msg", "Node"), 5: ("msg", "Tensor"), 15: ("msg", "Sparse")},
    "Node": {1: ("str", ""), 2: ("str", ""), 4: ("str", ""), 7: ("str", ""), 5: ("msg", "Attribute")},
    "Attribute": {1: ("str", ""), 5: ("msg", "Tensor"), 6: ("msg", "Graph"), 10: ("msg", "Tensor"),
                  11: ("msg", "Graph"), 22: ("msg", "Sparse"), 23: ("msg", "Sparse")},
    "Sparse": {1: ("msg", "Tensor"), 2: ("msg", "Tensor"), 3: ("ints", "")},
    "Tensor": {1: ("ints", ""), 2: ("int", ""), 7: ("ints", ""), 8: ("str", ""), 9: ("str", ""),
               13: ("msg", "Entry"), 14: ("int", "")},
    "Entry": {},
}


@dataclasses.dataclass
class _Msg:
    kind: str
    fields: dict[int, list[object]] = dataclasses.field(default_factory=dict)

    def first(self, field: int, default: object = None) -> object:
        values = self.fields.get(field)
        return values[-1] if values else default


def _varint(data: bytes, pos: int, end: int) -> tuple[int, int]:
    result = 0
    shift = 0
    while True:
        if pos >= end:
            raise GuardError(Reason.MODEL_INVALID, "not a loadable ONNX model: truncated varint")
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7
        if shift >= 70:
            raise GuardError(Reason.MODEL_INVALID, "not a loadable ONNX model: varint too long")


def _signed(value: int) -> int:
    value &= (1 << 64) - 1
    return value - (1 << 64) if value >= 1 << 63 else value


def _parse(data: bytes, start: int, end: int, kind: str, depth: int) -> _Msg:
    if depth > MAX_DEPTH:
        raise GuardError(Reason.MODEL_UNSAFE, f"model nests messages deeper than {MAX_DEPTH}")
    schema = _SCHEMA[kind]
    msg = _Msg(kind)
    pos = start
    while pos < end:
        key, pos = _varint(data, pos, end)
        field, wire = key >> 3, key & 7
        if field == 0:
            raise GuardError(Reason.MODEL_INVALID, "not a loadable ONNX model: field number 0")
        spec = schema.get(field)
        if wire == 0:
            value, pos = _varint(data, pos, end)
            if spec is not None and spec[0] in ("int", "ints"):
                msg.fields.setdefault(field, []).append(_signed(value))
        elif wire == 1:
            pos += 8
        elif wire == 5:
            pos += 4
        elif wire == 2:
            length, pos = _varint(data, pos, end)
            if length > end - pos:
                raise GuardError(Reason.MODEL_INVALID, "not a loadable ONNX model: a field runs past the end")
            if spec is not None:
                what, child = spec
                if what == "msg":
                    msg.fields.setdefault(field, []).append(_parse(data, pos, pos + length, child, depth + 1))
                elif what == "str":
                    msg.fields.setdefault(field, []).append(data[pos:pos + length])
                elif what == "ints":
                    values = msg.fields.setdefault(field, [])
                    inner = pos
                    while inner < pos + length:
                        value, inner = _varint(data, inner, pos + length)
                        values.append(_signed(value))
                # "int" fields never arrive length-delimited in a valid model; skip.
            pos += length
        else:  # groups (3, 4) and reserved wire types: ONNX never uses them
            raise GuardError(Reason.MODEL_INVALID, f"not a loadable ONNX model: wire type {wire}")
        if pos > end:
            raise GuardError(Reason.MODEL_INVALID, "not a loadable ONNX model: a field runs past the end")
    return msg


def _children(msg: _Msg) -> list[_Msg]:
    return [v for values in msg.fields.values() for v in values if isinstance(v, _Msg)]


def _text(value: object) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else ""


def _elements(dims: list[object]) -> int:
    count = 1
    for d in dims:
        if not isinstance(d, int) or d < 0:
            return -1
        count *= d
    return count


def _int64_values(tensor: _Msg) -> list[int] | None:
    """The values of a constant INT64 tensor (int64_data or raw_data), or None."""
    if tensor.first(2) != 7:  # TensorProto.INT64
        return None
    raw = tensor.first(9)
    if isinstance(raw, bytes):
        if len(raw) % 8:
            return None
        return list(struct.unpack(f"<{len(raw) // 8}q", raw))
    return [v for v in tensor.fields.get(7, []) if isinstance(v, int)]


def check_bytes(data: bytes, limits: Limits) -> None:
    """Raise :class:`GuardError` unless ``data`` is a model the operator may hand to onnxruntime."""
    if len(data) > limits.max_bytes:
        raise GuardError(
            Reason.MODEL_TOO_EXPENSIVE,
            f"model is {len(data)} bytes; the operator accepts at most {limits.max_bytes} (--max-model-bytes)",
        )
    try:
        model = _parse(data, 0, len(data), "Model", 0)
    except RecursionError as exc:  # cannot happen below MAX_DEPTH, but never crash on input
        raise GuardError(Reason.MODEL_UNSAFE, "model nests too deeply") from exc
    if model.first(7) is None:
        raise GuardError(Reason.MODEL_INVALID, "not a loadable ONNX model: no graph")
    constants: dict[str, list[int]] = {}
    shape_uses: list[str] = []
    stack = [model]
    while stack:
        msg = stack.pop()
        stack.extend(_children(msg))
        if msg.kind == "OpsetId":
            domain = _text(msg.first(1, b""))
            if domain not in ALLOWED_DOMAINS:
                raise GuardError(Reason.MODEL_UNSAFE, f"model imports operator domain {domain!r}; only "
                                 "the default ONNX domain and ai.onnx.ml are allowed")
        elif msg.kind == "Node":
            domain = _text(msg.first(7, b""))
            op = _text(msg.first(4, b""))
            if domain not in ALLOWED_DOMAINS:
                raise GuardError(Reason.MODEL_UNSAFE, f"model node {op!r} uses operator domain {domain!r}; "
                                 "only the default ONNX domain and ai.onnx.ml are allowed")
            if op == "ConstantOfShape" and domain in ("", "ai.onnx") and msg.fields.get(1):
                shape_uses.append(_text(msg.fields[1][0]))
            if op == "Constant" and msg.fields.get(2):
                for attribute in msg.fields.get(5, []):
                    assert isinstance(attribute, _Msg)
                    value = attribute.first(5)
                    if isinstance(value, _Msg):
                        values = _int64_values(value)
                        if values is not None:
                            constants[_text(msg.fields[2][0])] = values
        elif msg.kind == "Tensor":
            name = _text(msg.first(8, b""))
            if msg.fields.get(13) or msg.first(14, 0) == 1:
                raise GuardError(Reason.MODEL_UNSAFE, f"model tensor {name!r} has external data; a model "
                                 "must carry all its data inline")
            elements = _elements(msg.fields.get(1, []))
            if elements < 0 or elements > limits.max_elements:
                raise GuardError(Reason.MODEL_TOO_EXPENSIVE, f"model tensor {name!r} has dims "
                                 f"{msg.fields.get(1, [])}; the limit is {limits.max_elements} elements")
            values = _int64_values(msg)
            if values is not None and name:
                constants[name] = values
    for name in shape_uses:
        shape = constants.get(name)
        if shape is not None:
            elements = _elements(list(shape))
            if elements < 0 or elements > limits.max_elements:
                raise GuardError(Reason.MODEL_TOO_EXPENSIVE, f"model ConstantOfShape builds shape {shape}; the "
                                 f"limit is {limits.max_elements} elements")


# --- trial in a child process ---------------------------------------------------------------

_CHILD = "vigil.adapters.model_guard"


def trial(data: bytes, limits: Limits) -> None:
    """Load and score ``data`` in a child process under memory/CPU/time limits.

    Raises :class:`GuardError` with the child's ModelError reason, or ModelTooExpensive when it ran
    out of memory, CPU or time. The caller's thread only waits on a pipe.
    """
    env = dict(os.environ)
    env["VIGIL_TRIAL_MEMORY"] = str(limits.trial_memory)
    env["VIGIL_TRIAL_CPU"] = str(max(1, int(limits.trial_timeout)))
    env["VIGIL_TRIAL_ROWS"] = str(limits.trial_rows)
    env.pop("KUBECONFIG", None)
    try:
        proc = subprocess.run(
            [sys.executable, "-I", "-m", _CHILD] if _isolated_ok() else [sys.executable, "-m", _CHILD],
            input=data, capture_output=True, timeout=limits.trial_timeout, env=env, check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise GuardError(Reason.MODEL_TOO_EXPENSIVE,
                         f"model did not load and score {limits.trial_rows} rows within "
                         f"{limits.trial_timeout:g} s") from exc
    lines = proc.stdout.decode("utf-8", "replace").strip().splitlines()
    result = None
    if lines:
        try:
            result = json.loads(lines[-1])
        except ValueError:
            result = None
    if proc.returncode == 0 and isinstance(result, dict) and result.get("ok"):
        return
    if isinstance(result, dict) and "reason" in result:
        try:
            reason = Reason(str(result["reason"]))
        except ValueError:
            reason = Reason.MODEL_INVALID
        raise GuardError(reason, str(result.get("message", ""))[:400])
    tail = proc.stderr.decode("utf-8", "replace").strip()[-300:]
    signals = {-signal.SIGXCPU: "it used up its CPU time limit", -signal.SIGKILL: "it was killed",
               -signal.SIGSEGV: "it crashed (SIGSEGV, usually out of memory)"}
    why = signals.get(proc.returncode, f"exit {proc.returncode}")
    raise GuardError(
        Reason.MODEL_TOO_EXPENSIVE,
        f"model trial failed: {why}; limits {limits.trial_memory >> 20} MiB of address space and "
        f"{limits.trial_timeout:g} s{': ' + tail if tail else ''}",
    )


def _isolated_ok() -> bool:
    # -I drops PYTHONPATH and the current directory; keep it only when vigil imports without them
    # (an installed package), which is the case in the operator image and in .venv.
    return os.environ.get("VIGIL_TRIAL_NO_ISOLATION") is None


def _child() -> int:
    memory = int(os.environ.get("VIGIL_TRIAL_MEMORY", str(1 << 30)))
    cpu = int(os.environ.get("VIGIL_TRIAL_CPU", "10"))
    rows = int(os.environ.get("VIGIL_TRIAL_ROWS", "64"))
    resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    data = sys.stdin.buffer.read()
    try:
        import numpy as np

        from vigil.adapters import inference

        scorer = inference.Scorer(data)
        scorer.score(np.zeros((rows, len(scorer.info.feature_names)), dtype=np.float32))
    except inference.ModelError as exc:
        reason = exc.reason
        if reason == Reason.MODEL_INVALID and ("alloc" in exc.message.lower() or "memory" in exc.message.lower()):
            reason = Reason.MODEL_TOO_EXPENSIVE  # onnxruntime reports RLIMIT_AS as a failed allocation
        print(json.dumps({"reason": str(reason), "message": exc.message}))
        return 1
    except MemoryError:
        print(json.dumps({"reason": str(Reason.MODEL_TOO_EXPENSIVE),
                          "message": f"model needs more than {memory >> 20} MiB of address space"}))
        return 1
    print(json.dumps({"ok": True}))
    return 0


if __name__ == "__main__":
    sys.exit(_child())
