"""bench/student_speed: the tokens per round a student needs to beat AR, from per-forward costs."""
import math

import pytest

from bench.student_speed import break_even_tokens_per_round


def test_break_even_is_where_a_block_costs_what_b_ar_steps_cost():
    t_ar, t_round, t_commit, b = 10.0, 14.0, 20.0, 4
    r = break_even_tokens_per_round(t_ar, t_round, t_commit, b)
    assert r == pytest.approx(4 / (1 + 20 / 14))
    # a block at r tokens per round: one commit (with the next block's first round) + (b / r - 1) rounds
    assert t_commit + (b / r - 1) * t_round == pytest.approx(b * t_ar)
    assert break_even_tokens_per_round(t_ar, t_ar, t_ar, b) == pytest.approx(1.0)  # every pass as cheap as a step
    assert math.isinf(break_even_tokens_per_round(t_ar, t_round, 4 * t_ar, b))  # a commit alone costs b steps
