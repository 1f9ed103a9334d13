"""``vigil dashboard``: a local web page over the user's own view of the cluster.

Like Argo Rollouts' dashboard, it runs on the user's machine with the user's kubeconfig, so every
read and every Approve / Reject is the user's own request: Kubernetes RBAC, the chart's admission
policy and the audit log apply as they do to ``kubectl``. Nothing here holds credentials of its own.

Layout: :mod:`.views` (pure: raw objects to rows), :mod:`.sparkline` and :mod:`.pages` (pure: rows
to HTML, every value escaped by :mod:`.markup`), :mod:`.cluster` (the only Kubernetes I/O),
:mod:`.server` (aiohttp: routes, CSRF and Origin checks, security headers), :mod:`.command` (the CLI).
"""
