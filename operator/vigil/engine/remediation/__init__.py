"""The remediation engine: from detector verdicts and alerts to audited AWS actions.

kopf handlers feed it RemediationPolicy and RemediationAction objects; one loop
(on the leader only) reconciles each policy (incident, guard rails, the next
step of the ladder) and drives each action through its phases (approval,
intent, AWS call, verification). Deciding is delegated to
:mod:`vigil.domain.remediation`; AWS I/O to :mod:`vigil.adapters.aws`.
"""
