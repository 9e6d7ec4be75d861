"""Token positions from attention masks, against hand-written values for left and right padding."""

from __future__ import annotations

import torch

from steering_adapter.tuner.token_positions import last_token_index, position_ids_from_mask


def test_last_token_and_position_ids_for_both_padding_sides():
    mask = torch.tensor(
        [
            [0, 0, 1, 1, 1],  # left padded
            [1, 1, 1, 0, 0],  # right padded
            [1, 1, 1, 1, 1],  # full
            [0, 0, 0, 0, 1],  # one token
        ]
    )
    assert last_token_index(mask).tolist() == [4, 2, 4, 4]
    assert last_token_index(mask.bool()).tolist() == [4, 2, 4, 4]
    assert position_ids_from_mask(mask).tolist() == [
        [0, 0, 0, 1, 2],
        [0, 1, 2, 0, 0],
        [0, 1, 2, 3, 4],
        [0, 0, 0, 0, 0],
    ]
