"""Pure deciders: no I/O, no kopf, no boto3, no onnxruntime.

Everything here takes ``now`` as a parameter and returns values; the engine and
handlers act on them. This keeps the decision logic testable without servers.
"""
