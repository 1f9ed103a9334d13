"""All I/O lives here: Prometheus, ONNX Runtime, the Kubernetes API, AWS, HTTP.

Adapters are thin: they translate between the outside world and the typed
values the pure deciders in :mod:`vigil.domain` work on, and they classify
failures so the engine can report them precisely.
"""
