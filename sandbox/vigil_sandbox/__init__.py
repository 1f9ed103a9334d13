"""Vigil's local sandbox and test peers: never shipped in the operator's wheel or image.

The Kubernetes API emulator, the sandbox Prometheus and moto helpers, the fault proxy, the chat capture
and `make demo` (``python -m vigil_sandbox.demo``). A distribution of its own (``vigil-sandbox``,
``sandbox/pyproject.toml``) that ``make bootstrap`` installs beside the operator for the demo and the
tests; the operator's package (``vigil``) never imports it.
"""
