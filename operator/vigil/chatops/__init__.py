"""ChatOps: approve, reject and ask Vigil from Slack and Discord (``vigil chatops``)."""
