"""Every attention mask against a brute-force mask built with plain Python loops."""
import numpy as np
import pytest

from opdlm_jax.models import masks


def brute_causal(q_pos, k_pos):
    return np.array([[[kp <= qp for kp in k_row] for qp in q_row] for q_row, k_row in zip(q_pos, k_pos)])


def brute_block_causal(q_pos, k_pos, block_size, offset):
    # Block membership from first principles: token at position p sits in block (p - offset) // b.
    def block(p):
        return (p - offset) // block_size
    return np.array([[[block(kp) <= block(qp) for kp in k_row] for qp in q_row]
                     for q_row, k_row in zip(q_pos, k_pos)])


def brute_training_layout(prompt_len, length, block_size):
    """[prompt | x0 | x_t] mask for one sequence, spelled out case by case."""
    n = prompt_len + 2 * length
    out = np.zeros((n, n), bool)

    def describe(i):
        if i < prompt_len:
            return "prompt", None
        if i < prompt_len + length:
            return "clean", (i - prompt_len) // block_size
        return "noisy", (i - prompt_len - length) // block_size

    for i in range(n):
        qi, qb = describe(i)
        for j in range(n):
            kj, kb = describe(j)
            if qi == "prompt":
                allowed = kj == "prompt" and (j - prompt_len) // block_size <= (i - prompt_len) // block_size
            elif qi == "clean":
                allowed = kj == "prompt" or (kj == "clean" and kb <= qb)
            else:
                allowed = kj == "prompt" or (kj == "clean" and kb < qb) or (kj == "noisy" and kb == qb)
            out[i, j] = allowed
    return out


def test_causal_matches_brute_force():
    pos = np.array([[0, 1, 2, 3, 4, 5], [0, 0, 0, 1, 2, 3]])
    np.testing.assert_array_equal(np.asarray(masks.causal(pos, pos)), brute_causal(pos, pos))


@pytest.mark.parametrize("block_size", [1, 2, 4, 5])
@pytest.mark.parametrize("prompt_len", [0, 3, 4, 7])
def test_block_causal_matches_brute_force(block_size, prompt_len):
    pos = np.arange(prompt_len + 11)[None]
    blocks = masks.response_block_ids(pos, prompt_len, block_size)
    np.testing.assert_array_equal(np.asarray(masks.block_causal(blocks, blocks)),
                                  brute_block_causal(pos, pos, block_size, prompt_len))


def test_block_size_one_is_causal():
    pos = np.arange(9)[None]
    np.testing.assert_array_equal(np.asarray(masks.block_causal(pos, pos)), brute_causal(pos, pos))


@pytest.mark.parametrize("block_size,prompt_len,length", [(4, 8, 12), (4, 4, 8), (2, 6, 6), (3, 3, 9)])
def test_training_layout_matches_brute_force(block_size, prompt_len, length):
    cols = np.arange(prompt_len + 2 * length)
    noisy = cols >= prompt_len + length
    # x_t columns share the block ids of their x0 twins.
    twin = np.where(noisy, cols - length, cols)
    blocks = masks.response_block_ids(twin, prompt_len, block_size)
    got = masks.training_layout(blocks[None], noisy[None], blocks[None], noisy[None])[0]
    np.testing.assert_array_equal(np.asarray(got), brute_training_layout(prompt_len, length, block_size))


def test_ragged_prompts_left_padded_hide_padding():
    # Two prompts of lengths 5 and 2, left padded to width 8 (a multiple of b=4).
    valid = np.array([[0, 0, 0, 1, 1, 1, 1, 1] + [1] * 4, [0] * 6 + [1, 1] + [1] * 4], bool)
    cols = np.broadcast_to(np.arange(12), valid.shape)
    blocks = masks.response_block_ids(cols, 8, 4)
    got = np.asarray(masks.with_valid_keys(masks.block_causal(blocks, blocks), valid))
    for b in range(2):
        for i in range(12):
            for j in range(12):
                expected = valid[b, j] and (j - 8) // 4 <= (i - 8) // 4
                assert got[b, i, j] == expected, (b, i, j)
    pos = np.asarray(masks.positions_from_valid(valid))
    assert pos[0, 3:].tolist() == list(range(9)) and pos[1, 6:].tolist() == list(range(6))
