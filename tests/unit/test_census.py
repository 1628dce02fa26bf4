"""The counts a wave keeps from status moves (rules/census.py): folding the moves of any histories,
in any order and in any batches, gives exactly the rows per status."""

from __future__ import annotations

import random
from collections import Counter

from hypothesis import given
from hypothesis import strategies as st

from licshift.rules.census import Move, empty_counts, fold, move_of
from licshift.rules.outcomes import OutcomeStatus

histories = st.lists(st.lists(st.sampled_from(list(OutcomeStatus)), min_size=1, max_size=8), max_size=30)


def moves_of(history: list[OutcomeStatus]) -> list[Move]:
    """The moves the ledger records for one row's successive saves (none when the status stays)."""
    moves, before = [], None
    for status in history:
        move = move_of(before, status)
        if move is not None:
            moves.append(move)
        before = status
    return moves


@given(histories, st.randoms(use_true_random=False), st.integers(min_value=1, max_value=7))
def test_folding_moves_in_any_order_and_batches_counts_the_rows(
    rows: list[list[OutcomeStatus]], rng: random.Random, batch: int
) -> None:
    moves = [m for history in rows for m in moves_of(history)]
    rng.shuffle(moves)
    counts = empty_counts()
    for start in range(0, len(moves), batch):
        counts = fold(counts, moves[start : start + batch])
    assert counts == {**empty_counts(), **Counter(history[-1] for history in rows)}


def test_a_save_that_keeps_the_status_records_no_move() -> None:
    assert move_of(OutcomeStatus.REMOVING, OutcomeStatus.REMOVING) is None
    assert move_of(None, OutcomeStatus.PLANNED) == Move(None, OutcomeStatus.PLANNED)
    assert fold({OutcomeStatus.PLANNED: 2}, [Move(OutcomeStatus.PLANNED, None)])[OutcomeStatus.PLANNED] == 1
