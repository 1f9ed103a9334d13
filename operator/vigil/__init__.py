"""Vigil: a Kubernetes operator for AIOps auto-remediation.

Anomaly detection runs an ONNX model over Prometheus series; remediation turns
anomalies into guarded, audited AWS changes. See README.md.
"""

__version__ = "0.1.0"
