"""Pure deciders for remediation: triggers, guard rails, the escalation ladder, plans.

Nothing here calls AWS or Kubernetes; the engine gathers observations, these
functions decide, and the engine acts. ``now`` is always a parameter.
"""
