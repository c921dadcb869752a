"""The broker outage: when the run recovered from it, and which phase of the run a time is in.

**The outage window** runs from ``OUTAGE_LEAD_S`` before the broker is killed (messages then in
flight die with it) until *recovery*, the latest of (:class:`Recovery`): each instance logging
that it reconnected; for each direction (instance A → B, B → A), the first cross-instance
delivery received after the broker was back (nats-py sends what it buffered while disconnected
then); for each direction, the send time from which ``STABLE_S`` seconds of cross-instance
deliveries all arrived; and the ask time from which ``STABLE_S`` seconds of ``who`` answers were
all exact (the processes announce themselves to the restarted broker's registry again). Times
are by the send (or the ask), in phases (:class:`Phases`): ``before`` the window, ``outage``
(until the broker is back), ``recovery`` (until recovery) and ``after``. Losses before and after
are the ones that should not happen. If the flow never comes back, the window ends when the
broker was back, and every later loss counts as "after".
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from .expected import Delivery, Received

#: The outage window starts this long before the kill.
OUTAGE_LEAD_S = 1.0
#: Recovery: how long cross-instance deliveries must arrive without a loss (and who answers be
#: exact).
STABLE_S = 10.0
PHASES = ("before", "outage", "recovery", "after")
#: The sender's instance → the name of the cross-instance direction from it.
DIRECTIONS = {0: "A→B", 1: "B→A"}


class Phases:
    """Which phase of the run a time is in: before, outage, recovery or after (see above)."""

    def __init__(self, killed: float, back: float, recovered: float | None) -> None:
        self.start = killed - OUTAGE_LEAD_S
        self.back = back
        self.end = recovered if recovered is not None else back

    def of(self, t: float) -> str:
        if t < self.start:
            return "before"
        if t < self.back:
            return "outage"
        if t < self.end:
            return "recovery"
        return "after"

    def in_window(self, t0: float, t1: float) -> bool:
        """Whether [t0, t1] overlaps the outage window."""
        return t0 < self.end and t1 >= self.start


def loss_free_from(outcomes: Iterable[tuple[float, bool]]) -> float | None:
    """The first time that starts ``STABLE_S`` seconds (or the rest of the run) without failure.

    ``outcomes``: (time, succeeded) in time order — the expected deliveries by send time, or the
    ``who`` answers by ask time (exact or not). The last run of successes counts even if shorter
    than ``STABLE_S``; None if there are no outcomes or the last one failed."""
    candidate = None
    for t, ok in outcomes:
        if candidate is not None and t > candidate + STABLE_S:
            return candidate
        if not ok:
            candidate = None
        elif candidate is None:
            candidate = t
    return candidate


def first_cross_delivery(
    received: Received,
    sends: dict[int, tuple[int, str, float]],
    instance_of: dict[int, int],
    back: float,
) -> dict[str, float | None]:
    """Per direction, when the first cross-instance delivery was received after the broker was
    back — of any message: nats-py sends what it buffered while disconnected once it
    reconnects. None if none was."""
    return {
        direction: min(
            (
                t
                for (message, receiver), t in received.items()
                if t >= back
                and instance_of[sends[message][0]] == src
                and instance_of[receiver] != src
            ),
            default=None,
        )
        for src, direction in DIRECTIONS.items()
    }


def cross_loss_free_from(
    expected: Iterable[Delivery], received: Received, back: float
) -> dict[str, float | None]:
    """Per direction, the :func:`loss_free_from` of the expected cross-instance deliveries sent
    after the broker was back."""
    expected = list(expected)
    return {
        direction: loss_free_from(
            sorted(
                (d.sent_at, (d.message, d.receiver) in received)
                for d in expected
                if d.src == src and d.dst != src and d.sent_at >= back
            )
        )
        for src, direction in DIRECTIONS.items()
    }


def who_exact_from(
    who: Iterable[tuple[int, float, float, str, set[int]]],
    verdicts: Iterable[tuple[list[int], list[int]]],
    back: float,
) -> float | None:
    """The :func:`loss_free_from` of the ``who`` answers asked after the broker was back, an
    answer succeeding when it misses no one and names no one extra (``verdicts``)."""
    return loss_free_from(
        sorted(
            (asked, not (missing or extra))
            for (_, asked, _, _, _), (missing, extra) in zip(who, verdicts, strict=True)
            if asked >= back
        )
    )


@dataclass
class Recovery:
    """The moments the run came back after the broker did (absolute times, None: never)."""

    reconnected: dict[str, float | None]  # instance name → its last "reconnected" line
    first_delivery: dict[str, float | None]  # direction → :func:`first_cross_delivery`
    loss_free: dict[str, float | None]  # direction → :func:`cross_loss_free_from`
    who_exact: float | None  # :func:`who_exact_from`

    @property
    def recovered(self) -> float | None:
        """Recovery: the latest of the moments, or None if any of them never came."""
        moments = [
            *self.first_delivery.values(),
            *self.loss_free.values(),
            *self.reconnected.values(),
            self.who_exact,
        ]
        return None if None in moments else max(t for t in moments if t is not None)

    def since(self, back: float) -> dict[str, object]:
        """The results' ``recovery``: each moment in seconds after the broker was back."""
        recovered = self.recovered
        return {
            "instances_reconnected_s": _since(back, self.reconnected),
            "first_cross_delivery_s": _since(back, self.first_delivery),
            "loss_free_from_s": _since(back, self.loss_free),
            "who_exact_from_s": _since(back, {"who": self.who_exact})["who"],
            "recovery_s": None if recovered is None else round(recovered - back, 3),
        }


def _since(back: float, moments: dict[str, float | None]) -> dict[str, float | None]:
    return {name: None if t is None else round(t - back, 3) for name, t in moments.items()}
