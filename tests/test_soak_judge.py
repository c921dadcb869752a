"""The soak benchmark's oracle (benchmarks/soak/): who should receive a broadcast, the outage
window and the recovery, who answers — on small synthetic logs, without brokers or Node."""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest

from benchmarks.soak import expected as oracle
from benchmarks.soak.asks import check_who_answers, client_errors
from benchmarks.soak.expected import GUARD_S, Delivery, Receipts, Unexpected
from benchmarks.soak.judge import judge, losses_by_phase, server_log_phase
from benchmarks.soak.logs import INF, ClientLogs, Membership
from benchmarks.soak.outage import (
    OUTAGE_LEAD_S,
    STABLE_S,
    Phases,
    Recovery,
    first_cross_delivery,
    loss_free_from,
)

ROOM = "soak-0"
SENT = 100.0  # when the message under test is sent
MESSAGE = 7
#: An outage far from SENT: every send here is "before" it.
FAR = Phases(killed=10_000.0, back=10_005.0, recovered=10_006.0)


def member(client: int, joined: float, left: float = INF, room: str = ROOM) -> Membership:
    """A stay whose join was acknowledged at ``joined`` (asked 10 ms before) and whose leave
    was asked at ``left`` (acknowledged 10 ms after; never, by default)."""
    return Membership(client, room, joined - 0.01, joined, left, left + 0.01 if left < INF else INF)


def client_logs(
    memberships: Iterable[Membership],
    sends: dict[int, tuple[int, str, float]],
    receipts: Iterable[tuple[int, int, str, float]] = (),
    errors: Iterable[tuple[int, float, str, str]] = (),
    who: Iterable[tuple[int, float, float, str, set[int]]] = (),
) -> ClientLogs:
    """The logs of clients 0-9, even ones on instance A (0), odd ones on B (1)."""
    rooms: dict[str, list[Membership]] = defaultdict(list)
    for m in memberships:
        rooms[m.room].append(m)
    instance_of = {client: client % 2 for client in range(10)}
    return ClientLogs(
        instance_of, rooms, sends, list(receipts), [], [], [], list(errors), list(who)
    )


def judged(logs: ClientLogs) -> tuple[list[Delivery], Receipts, Unexpected]:
    """What judge() does with the broadcasts: expected deliveries, receipts, the unexpected."""
    closed_at = oracle.websocket_closes(logs.errors)
    receipts = oracle.sort_receipts(logs.sends, logs.receipts)
    expected = oracle.expected_deliveries(logs, closed_at, receipts.received)
    keys = {(d.message, d.receiver) for d in expected}
    return expected, receipts, oracle.sort_unexpected(logs, receipts.received, keys)


def receivers(expected: list[Delivery]) -> set[int]:
    return {d.receiver for d in expected}


# -- who should receive a broadcast --------------------------------------------------------------


def test_a_member_from_guard_before_the_send_on_is_expected_and_lost_unless_received() -> None:
    logs = client_logs(
        [
            member(0, joined=0.0),  # the sender
            member(1, joined=SENT - GUARD_S),  # on B: acknowledged just early enough, stays
            member(2, joined=0.0, left=SENT + GUARD_S),  # on A: stays just long enough
        ],
        sends={MESSAGE: (0, ROOM, SENT)},
        receipts=[(MESSAGE, 2, ROOM, SENT + 0.01)],
    )
    expected, receipts, others = judged(logs)
    assert expected == [
        Delivery(MESSAGE, 1, src=0, dst=1, sent_at=SENT),
        Delivery(MESSAGE, 2, src=0, dst=0, sent_at=SENT),
    ]
    assert (others.tolerated, others.unexpected) == (0, [])
    loss, examples = losses_by_phase(expected, receipts.received, logs.sends, FAR)
    assert dict(loss["before"]) == {"expected_cross": 1, "lost_cross": 1, "expected_same": 1}
    assert [(e["receiver"], e["route"]) for e in examples] == [(1, "cross")]


def test_a_join_or_leave_within_the_guard_of_the_send_is_neither_expected_nor_unexpected() -> None:
    late = SENT - GUARD_S + 0.05  # acknowledged less than GUARD_S before the send
    early = SENT + GUARD_S - 0.05  # asked to leave less than GUARD_S after it
    logs = client_logs(
        [
            member(0, joined=0.0),
            member(1, joined=late),  # received it: tolerated
            member(2, joined=0.0, left=early),  # received it: tolerated
            member(3, joined=late),  # did not: not lost
            member(4, joined=0.0, left=early),  # did not: not lost
        ],
        sends={MESSAGE: (0, ROOM, SENT)},
        receipts=[(MESSAGE, 1, ROOM, SENT + 0.1), (MESSAGE, 2, ROOM, SENT + 0.01)],
    )
    expected, receipts, others = judged(logs)
    assert expected == []
    assert others.tolerated == 2
    assert others.unexpected == []
    loss, _ = losses_by_phase(expected, receipts.received, logs.sends, FAR)
    assert all(not counts for counts in loss.values())


def test_a_receipt_by_the_sender_or_by_a_client_not_in_the_room_is_unexpected() -> None:
    logs = client_logs(
        [
            member(0, joined=0.0),  # the sender
            member(1, joined=0.0, left=50.0),  # left well before the send
            member(2, joined=SENT + 5),  # asked to join only after receiving it
            member(3, joined=0.0, room="soak-1"),  # in another room only
            member(4, joined=0.0),  # a member that received it: expected, fine
        ],
        sends={MESSAGE: (0, ROOM, SENT)},
        receipts=[(MESSAGE, client, ROOM, SENT + 0.01) for client in range(6)],
    )
    expected, _, others = judged(logs)
    assert receivers(expected) == {4}
    assert others.tolerated == 0
    assert sorted(u["receiver"] for u in others.unexpected) == [0, 1, 2, 3, 5]
    assert others.unexpected[0] == {
        "message": MESSAGE,
        "receiver": 0,
        "room": ROOM,
        "sent": SENT,
        "at": SENT + 0.01,
    }


def test_a_failed_join_or_leave_is_never_expected_nor_unexpected() -> None:
    failed_join = Membership(1, ROOM, 0.0, INF)  # the join timed out: membership unknown
    failed_leave = Membership(2, ROOM, 0.0, 0.01, leave_requested=50.0)  # leave_acked INF
    logs = client_logs(
        [member(0, joined=0.0), failed_join, failed_leave, Membership(3, ROOM, 0.0, INF)],
        sends={MESSAGE: (0, ROOM, SENT)},
        receipts=[(MESSAGE, 1, ROOM, SENT + 0.01), (MESSAGE, 2, ROOM, SENT + 0.01)],
    )
    expected, _, others = judged(logs)
    assert expected == []  # not 3 (its join failed and nothing came), not 1 and 2 either
    assert (others.tolerated, others.unexpected) == (2, [])


def test_duplicates_unknown_messages_and_wrong_rooms_are_counted_apart() -> None:
    receipts = oracle.sort_receipts(
        {MESSAGE: (0, ROOM, SENT)},
        [
            (MESSAGE, 1, ROOM, SENT + 0.2),
            (MESSAGE, 1, ROOM, SENT + 0.1),  # a duplicate: the first receipt's time stays
            (MESSAGE, 2, "soak-1", SENT + 0.1),  # the right message in the wrong room
            (MESSAGE, 1, "soak-1", SENT + 0.3),  # received already, but a wrong room first
            (999, 3, ROOM, SENT + 0.1),  # never sent
        ],
    )
    assert receipts == Receipts({(MESSAGE, 1): SENT + 0.2}, duplicates=1, unknown=1, wrong_room=2)


def test_a_client_whose_websocket_closed_is_not_expected_to_receive_after_the_close() -> None:
    logs = client_logs(
        [member(0, joined=0.0), member(1, joined=0.0), member(2, joined=0.0), member(3, 0.0)],
        sends={MESSAGE: (0, ROOM, SENT)},
        errors=[
            (1, SENT + 0.5, "websocket closed", "code 1006"),  # the first close counts
            (1, SENT + 50, "websocket closed", "code 1006"),
            (2, SENT + 5, "websocket closed", "code 1006"),  # long after the send
            (3, SENT, "emit refused", ROOM),  # an error, not a close
        ],
    )
    expected, _, _ = judged(logs)
    assert receivers(expected) == {2, 3}


def test_a_member_asking_to_leave_after_the_message_reached_its_instance_is_expected() -> None:
    # A latency spike: the message reaches instance B 3 s after the send, instance A at once.
    logs = client_logs(
        [
            member(0, joined=0.0),  # the sender, on A
            member(1, joined=0.0, left=SENT + 2),  # B: left before the message came to B
            member(3, joined=0.0),  # B: received it late
            member(5, joined=0.0, left=SENT + 4),  # B: left after it came to B, got nothing
            member(2, joined=0.0),  # A: received it at once
            member(4, joined=0.0, left=SENT + 2),  # A: left after it came to A, got nothing
        ],
        sends={MESSAGE: (0, ROOM, SENT)},
        receipts=[(MESSAGE, 3, ROOM, SENT + 3), (MESSAGE, 2, ROOM, SENT + 0.01)],
    )
    expected, receipts, _ = judged(logs)
    assert receivers(expected) == {2, 3, 4, 5}
    assert oracle.hub_arrivals(receipts.received, logs.instance_of) == {
        (MESSAGE, 1): SENT + 3,
        (MESSAGE, 0): SENT + 0.01,
    }
    loss, _ = losses_by_phase(expected, receipts.received, logs.sends, FAR)
    assert (loss["before"]["lost_same"], loss["before"]["lost_cross"]) == (1, 1)  # 4 and 5


# -- the outage window and the recovery ----------------------------------------------------------


def test_a_time_is_before_in_the_outage_in_the_recovery_or_after() -> None:
    phases = Phases(killed=100.0, back=105.0, recovered=107.0)
    assert phases.start == 100.0 - OUTAGE_LEAD_S == 99.0
    assert [phases.of(t) for t in (98.9, 99.0, 104.9, 105.0, 106.9, 107.0, 500.0)] == [
        "before",
        "outage",
        "outage",
        "recovery",
        "recovery",
        "after",
        "after",
    ]
    assert phases.in_window(90.0, 99.0)  # an ask answered as the window opens
    assert phases.in_window(106.9, 200.0)
    assert not phases.in_window(90.0, 98.9)
    assert not phases.in_window(107.0, 200.0)


def test_losses_are_counted_by_the_phase_of_their_send_and_only_before_and_after_shown() -> None:
    phases = Phases(killed=100.0, back=105.0, recovered=107.0)
    expected = [
        Delivery(message, 1, 0, 1, sent) for message, sent in enumerate((50, 100, 106, 110))
    ]
    loss, examples = losses_by_phase(expected, {}, {m: (0, ROOM, 0.0) for m in range(4)}, phases)
    assert {phase: dict(counts) for phase, counts in loss.items()} == {
        phase: {"expected_cross": 1, "lost_cross": 1}
        for phase in ("before", "outage", "recovery", "after")
    }
    assert [e["sent"] for e in examples] == [50, 110]


MOMENTS = {
    "reconnected_a",
    "reconnected_b",
    "first_a_b",
    "first_b_a",
    "free_a_b",
    "free_b_a",
    "who",
}


def recovery(**moments: float | None) -> Recovery:
    """A Recovery with every moment at 105.5 but those given."""
    at = dict.fromkeys(MOMENTS, 105.5) | moments
    return Recovery(
        reconnected={"a": at["reconnected_a"], "b": at["reconnected_b"]},
        first_delivery={"A→B": at["first_a_b"], "B→A": at["first_b_a"]},
        loss_free={"A→B": at["free_a_b"], "B→A": at["free_b_a"]},
        who_exact=at["who"],
    )


@pytest.mark.parametrize("moment", sorted(MOMENTS))
def test_recovery_is_the_latest_of_the_moments(moment: str) -> None:
    assert recovery(**{moment: 108.25}).recovered == 108.25
    assert recovery(**{moment: 105.25}).recovered == 105.5
    assert recovery(**{moment: 108.25}).since(back=105.0)["recovery_s"] == 3.25


@pytest.mark.parametrize("moment", sorted(MOMENTS))
def test_without_one_moment_there_is_no_recovery_and_the_window_ends_when_the_broker_is_back(
    moment: str,
) -> None:
    never = recovery(**{moment: None})
    assert never.recovered is None
    assert never.since(back=105.0)["recovery_s"] is None
    phases = Phases(killed=100.0, back=105.0, recovered=never.recovered)
    assert phases.end == 105.0
    assert [phases.of(t) for t in (104.9, 105.0)] == ["outage", "after"]


def test_loss_free_from_the_first_success_that_starts_stable_seconds_without_failure() -> None:
    assert loss_free_from([(1.0, True), (2.0, False), (3.0, True), (4.0, True)]) == 3.0
    # A loss within STABLE_S of the candidate resets it; past STABLE_S it is settled.
    assert loss_free_from([(3.0, True), (3.0 + STABLE_S - 0.1, False), (20.0, True)]) == 20.0
    assert loss_free_from([(3.0, True), (3.0 + STABLE_S + 0.1, False)]) == 3.0
    assert loss_free_from([(3.0, True), (4.0, False)]) is None
    assert loss_free_from([]) is None


def test_the_first_cross_instance_delivery_after_the_broker_is_back_is_per_direction() -> None:
    sends = {10: (0, ROOM, 90.0), 11: (1, ROOM, 104.0), 12: (0, ROOM, 106.0)}
    received = {
        (10, 1): 104.0,  # A→B before the broker was back
        (11, 3): 105.5,  # B→B: the same instance
        (12, 2): 106.1,  # A→A
        (12, 3): 106.2,  # A→B
        (10, 3): 107.0,  # A→B, later
    }
    instance_of = {client: client % 2 for client in range(4)}
    assert first_cross_delivery(received, sends, instance_of, back=105.0) == {
        "A→B": 106.2,
        "B→A": None,
    }


# -- who answers ---------------------------------------------------------------------------------


def test_a_who_answer_must_name_the_members_and_may_name_only_those_possibly_in() -> None:
    asked, answered = 100.0, 100.5
    members = [
        member(1, joined=50.0),  # in the room all along: must be named
        member(2, joined=50.0, left=100.2),  # asked to leave before the answer: may be named
        member(3, joined=100.2),  # acknowledged after the ask: may be named
        member(4, joined=50.0, left=90.0),  # left before the ask: must not be named
        member(5, joined=101.0),  # asked to join after the answer: must not be named
        member(6, joined=50.0),  # its WebSocket closed before the answer: may be named
        member(7, joined=50.0),  # must be named too
        Membership(8, ROOM, 99.9, 100.1),  # asked to join before the ask, acknowledged after
        Membership(9, ROOM, 49.9, 50.0, 100.4, 100.6),  # leaving: asked before the answer
    ]
    closed_at = {6: 100.3}
    everyone = {1, 2, 3, 6, 7, 8, 9}
    assert oracle.judge_who_answer(members, closed_at, asked, answered, everyone) == ([], [])
    assert oracle.judge_who_answer(members, closed_at, asked, answered, {1, 7}) == ([], [])
    assert oracle.judge_who_answer(members, closed_at, asked, answered, {2, 4, 5, 11}) == (
        [1, 7],
        [4, 5, 11],
    )


def test_who_answers_are_counted_exact_or_not_in_the_outage_window_and_outside_it() -> None:
    logs = client_logs(
        [member(1, joined=0.0)],
        sends={},
        who=[
            (0, 50.0, 50.1, ROOM, {1}),  # exact
            (0, 60.0, 60.1, ROOM, set()),  # 1 missing
            (0, 99.5, 99.6, ROOM, {1, 2}),  # in the window, 2 extra
        ],
    )
    verdicts = oracle.judge_who_answers(logs, {})
    assert verdicts == [([], []), ([1], []), ([], [2])]
    checked, inexact = check_who_answers(logs, verdicts, Phases(100.0, 105.0, 106.0))
    assert checked == {
        "outside_outage": 2,
        "inexact_outside_outage": 1,
        "in_outage": 1,
        "inexact_in_outage": 1,
    }
    assert [(e["asked"], e["in_outage"], e["missing"], e["extra"]) for e in inexact] == [
        (60.0, False, [1], []),
        (99.5, True, [], [2]),
    ]


# -- errors, and the whole judge on a tiny run ----------------------------------------------------


def test_client_errors_and_server_lines_are_placed_in_or_out_of_the_outage() -> None:
    phases = Phases(100.0, 105.0, 106.0)
    errors = [(1, 50.0, "emit refused", "x"), (2, 102.0, "emit refused", "y")]
    assert client_errors(errors, phases)["emit refused"] == {
        "count": 2,
        "in_outage": 1,
        "outside_outage": 1,
        "examples": [
            {"client": 1, "t": 50.0, "detail": "x"},
            {"client": 2, "t": 102.0, "detail": "y"},
        ],
    }
    phase = server_log_phase(phases, closing=200.0)
    assert [phase(t) for t in (None, 50.0, 102.0, 110.0, 150.0, 200.0)] == [
        "unknown",
        "outside_outage",
        "in_outage",
        "aftermath",
        "outside_outage",
        "shutdown",
    ]


def test_judge_reads_a_run_and_keeps_the_schema_of_the_committed_results(tmp_path: Path) -> None:
    start = 1_000.0

    def ms(t: float) -> float:
        return (start + t) * 1000

    lines: list[list[Any]] = []
    for client in range(4):
        lines += [["j", client, ROOM, ms(-5), ms(-4.99)], ["c", client, client % 2, ms(-4), "id"]]
    lines += [
        ["s", 1, 0, ROOM, ms(10)],  # from A: 1 (B) and 2 (A) get it, 3 (B) does not: lost
        ["r", 1, 1, ROOM, ms(10.01)],
        ["r", 1, 2, ROOM, ms(10.01)],
        ["s", 2, 1, ROOM, ms(70)],  # from B, after the outage: everyone gets it
        *(["r", 2, client, ROOM, ms(70.01)] for client in (0, 2, 3)),
        ["a", 0, "who", ms(20), ms(20.01), 1, "", [ROOM, json.dumps(["c0", "c1", "c2", "c3"])]],
        ["a", 1, "poke", ms(51), ms(61), 0, "poke: no answer within 10000 ms", None],
        ["l", 3, ROOM, ms(80), ms(80.01)],
    ]
    log = tmp_path / "clients_0.jsonl"
    log.write_text("".join(json.dumps(line) + "\n" for line in lines))
    timeline = {"began": -10.0, "connected": -1.0, "start": 0.0, "stop": 90.0}
    timeline |= {"clients_closing": 95.0, "broker_killed": 50.0, "broker_restarting": 54.9}
    timeline |= {"broker_back": 55.0, "clients_done": 96.0}
    happened = {
        "timeline": {name: start + t for name, t in timeline.items()},
        "samples": [],
        "node_done": [{"loop_lag_max_ms": 1.0}],
        "client_logs": [str(log)],
        "server_logs": {"a": str(tmp_path / "a.log"), "b": str(tmp_path / "b.log")},
    }
    results = judge({"clients": 4, "minutes": 1.5}, happened)

    broadcasts = results["broadcasts"]
    assert (broadcasts["sent"], broadcasts["expected_deliveries"]) == (2, 6)
    assert broadcasts["by_phase"]["before"] == {
        "expected_cross": 2,
        "expected_same": 1,
        "lost_cross": 1,
    }
    assert broadcasts["lost_outside_outage"] == 1
    assert broadcasts["lost_outside_outage_examples"][0]["receiver"] == 3
    assert results["timeline_s"]["outage_window_start"] == 49.0
    assert results["timeline_s"]["recovered"] is None  # no instance logged a reconnection
    assert results["asks"]["by_kind"]["poke"]["failed_in_outage"] == 1
    assert results["asks"]["who_answers_checked"] == {"outside_outage": 1}
    assert results["leaves"]["during_run"] == 1

    committed = json.loads(
        (Path(__file__).parents[1] / "docs" / "benchmarks" / "soak.json").read_text()
    )
    assert list(results) == list(committed)
    for part in ("timeline_s", "measured_rates_per_s", "broadcasts", "latency_ms", "recovery"):
        assert list(results[part]) == list(committed[part]), part
    for part in ("asks", "joins", "leaves"):
        assert list(results[part]) == list(committed[part]), part
    assert list(results["asks"]["by_kind"]["poke"]) == list(committed["asks"]["by_kind"]["poke"])
    assert list(results["latency_ms"]["per_minute"][0]) == [
        key for key in committed["latency_ms"]["per_minute"][0] if not key.startswith("cpu_")
    ]
