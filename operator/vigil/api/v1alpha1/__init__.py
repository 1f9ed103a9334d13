"""``vigil.dev/v1alpha1``: the API types. Pure data; no I/O, no kopf, no boto3."""

from vigil.api.v1alpha1.common import API_VERSION, GROUP, VERSION

__all__ = ["API_VERSION", "GROUP", "VERSION"]
