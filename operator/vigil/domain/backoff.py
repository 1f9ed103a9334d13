"""When to try again a detector whose query Prometheus' answer was refused for its size.

``TooManySeries`` and ``ResponseTooLarge`` are configuration errors that do not heal
by themselves, and each attempt still makes Prometheus evaluate the whole over-broad
query and send the answer up to the cap. Retrying every interval would cost the most
where it helps the least, so the wait doubles with each refused attempt, up to a cap,
and the status says when the next attempt comes. A new generation (the user edited
the spec) is tried at once and starts over. Pure: no clock, no I/O.
"""

from __future__ import annotations

from vigil.api.v1alpha1.detector import Reason

#: The reasons that back off: the answer is too big, whatever the moment.
OVERSIZED = frozenset({Reason.TOO_MANY_SERIES, Reason.RESPONSE_TOO_LARGE})

#: The longest wait between two attempts of an oversized query (seconds).
MAX_DELAY = 3600.0


def delay(interval: float, refused: int, cap: float = MAX_DELAY) -> float:
    """Seconds until the next attempt after ``refused`` consecutive refused answers.

    ``interval`` when nothing was refused; then 2, 4, 8... intervals, never more than ``cap``
    (nor less than the interval itself, if that is longer than the cap).
    """
    if refused <= 0:
        return interval
    return min(max(cap, interval), interval * 2.0 ** min(refused, 32))
