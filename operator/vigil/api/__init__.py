"""API types of Vigil and the CRD generator.

The pydantic models in :mod:`vigil.api.v1alpha1` are the single source of truth:
``crds/*.yaml`` and the Helm chart's CRDs are generated from them by
:mod:`vigil.api.crdgen` and checked for drift by a test. Nothing here does I/O.
"""
