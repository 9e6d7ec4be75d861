"""StageTimes: the tokens each stage puts through the watched model, against counts written out by hand."""

from __future__ import annotations

import torch

from steering_adapter.run.stages import StageTimes

PAD = 0


def test_counts_prefill_and_decode_positions_per_stage(llama):
    """A ``[3, 5]`` forward is 15 forward positions; ``generate`` of exactly 4 new tokens for 3 rows is one prefill
    of the prompt and 3 one-token steps of 3 rows (9 decode positions); passes outside any stage count nowhere."""
    times = StageTimes()
    times.watch(llama, pad_id=PAD)
    ids = torch.randint(5, 50, (3, 5))
    ids[0, :2] = PAD  # left padding of the first row
    mask = (ids != PAD).long()
    with torch.no_grad():
        llama(input_ids=ids, attention_mask=mask)  # outside any stage
        with times("score"):
            llama(input_ids=ids, attention_mask=mask)
        with times("generate"):
            llama.generate(
                input_ids=ids,
                attention_mask=mask,
                max_new_tokens=4,
                min_new_tokens=4,
                do_sample=False,
                pad_token_id=PAD,
                eos_token_id=None,
            )
    assert times.tokens["score"] == {"forward": 15, "decode": 0, "padding": 2}
    generated = times.tokens["generate"]
    assert generated["forward"] == 15 and generated["decode"] == 9
    assert generated["padding"] >= 2  # the prompt's padding, and any generated pad id
    assert set(times.seconds) == {"score", "generate"}


def test_stages_accumulate_and_a_second_watch_replaces_the_first(llama):
    """The same stage entered twice adds up; watching again does not count each pass twice."""
    times = StageTimes()
    times.watch(llama, pad_id=None)
    times.watch(llama, pad_id=None)
    ids = torch.randint(5, 50, (2, 4))
    with torch.no_grad():
        for _ in range(2):
            with times("collect"):
                llama(input_ids=ids)
    assert times.tokens["collect"] == {"forward": 16, "decode": 0, "padding": 0}


def test_without_watch_only_seconds_are_kept(llama):
    times = StageTimes()
    with torch.no_grad(), times("load"):
        llama(input_ids=torch.randint(5, 50, (1, 3)))
    assert times.tokens == {} and times.seconds["load"] >= 0
