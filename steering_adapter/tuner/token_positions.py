"""Token positions from an attention mask: one definition for every place that pads (left or right) and then needs
the last real token or the positions of the real tokens."""

from __future__ import annotations

import torch


def last_token_index(attention_mask: torch.Tensor) -> torch.Tensor:
    """Index of the last real (mask 1) token of each row, for left or right padding.

    Args:
        attention_mask: ``[batch, seq]`` of 0/1 (or booleans).

    Returns:
        long ``[batch]`` on the mask's device (0 for a row without any real token).
    """
    mask = attention_mask.long()
    positions = torch.arange(mask.shape[1], device=mask.device)
    return (mask * positions).argmax(dim=1)


def position_ids_from_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """Position ids counting real tokens only (0, 1, 2, ... from each row's first real token); padding gets 0.

    Args:
        attention_mask: ``[batch, seq]`` of 0/1 (or booleans).

    Returns:
        long ``[batch, seq]``: what an unpadded forward of each row would use.
    """
    mask = attention_mask.long()
    return (mask.cumsum(-1) - 1).masked_fill(mask == 0, 0)
