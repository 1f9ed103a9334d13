"""ChatOps: talk to Vigil from Slack, Discord, the CLI and the local dashboard.

``ask`` answers questions about detectors, policies and actions from read-only facts (with an
optional LLM); approving and rejecting from chat live in their own modules, behind RBAC.
"""
