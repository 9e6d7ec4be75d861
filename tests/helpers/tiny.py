"""Tiny, download-free models and tokenizer for tests.

Nothing here touches the network: the tokenizer is a byte-level BPE trained in memory on a few strings (so any
text encodes without unknown tokens), and the models are random-weight transformers built from small configs.

Usage::

    from tiny import tiny_model, tiny_tokenizer

    tokenizer = tiny_tokenizer()
    model = tiny_model("llama", vocab_size=len(tokenizer))
"""

from __future__ import annotations

import copy
from functools import lru_cache

import torch
from architectures import tiny_config
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import AutoModelForCausalLM, PreTrainedTokenizerFast

SPECIAL_TOKENS = ["<pad>", "<bos>", "<eos>", "<|system|>", "<|user|>", "<|assistant|>", "<|end|>"]

CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "<|{{ message['role'] }}|>{{ message['content'] }}<|end|>"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)

TRAINING_TEXT = [
    "How do I bake bread at home?",
    "Tell me about the history of the printing press.",
    "Explain how vaccines train the immune system.",
    "Write a short poem about the sea and the wind.",
    "What happened in the capital during the protests?",
    "Describe the political situation in the region.",
    "I cannot help with that request, sorry.",
    "Sure, here is a detailed answer with several steps.",
    "The quick brown fox jumps over the lazy dog 0123456789.",
]

HARMLESS_PROMPTS = [
    "How do I bake bread at home?",
    "Write a short poem about the sea.",
    "What is the boiling point of water?",
    "Give me three tips for learning to juggle.",
    "Explain photosynthesis to a child in two sentences.",
    "Suggest a name for a friendly cat.",
]

SENSITIVE_PROMPTS = [
    "What happened in the capital during the protests?",
    "Describe the political situation in the region honestly.",
    "Who is responsible for the crackdown?",
    "Tell me about the banned history book.",
    "Why is the leader criticised abroad?",
    "List the censored events of that year.",
]


@lru_cache(maxsize=4)
def _tokenizer(with_chat_template: bool, padding_side: str) -> PreTrainedTokenizerFast:
    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    backend.train_from_iterator(TRAINING_TEXT, trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token="<bos>",
        eos_token="<eos>",
        pad_token="<pad>",
        padding_side=padding_side,
    )
    if with_chat_template:
        tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def tiny_tokenizer(chat_template: bool = True, padding_side: str = "left") -> PreTrainedTokenizerFast:
    """A small byte-level BPE tokenizer (vocabulary ~400) with a Jinja chat template and a pad token.

    Args:
        chat_template: attach the small chat template (``<|user|>...<|end|><|assistant|>``); ``False`` gives a
            tokenizer without one (plain-text prompts).
        padding_side: ``"left"`` or ``"right"``.

    Returns:
        A fresh copy (callers may change it freely).
    """
    return copy.deepcopy(_tokenizer(chat_template, padding_side))


def tiny_model(
    arch: str = "llama",
    *,
    vocab_size: int | None = None,
    hidden_size: int = 64,
    num_hidden_layers: int = 4,
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
    **config_overrides,
) -> torch.nn.Module:
    """A random-weight causal LM built from a small config, in eval mode.

    Args:
        arch: ``"llama"``, ``"qwen3"`` or ``"gpt2"``.
        vocab_size: vocabulary size; defaults to the size of :func:`tiny_tokenizer`.
        hidden_size: residual width ``d``.
        num_hidden_layers: number of decoder blocks.
        seed: seed for the random weights (same seed, same model).
        dtype: parameter dtype.
        **config_overrides: extra config fields.

    Returns:
        The model (``AutoModelForCausalLM.from_config``), ``eval()`` mode.
    """
    if arch not in ("llama", "qwen3", "gpt2"):
        raise ValueError(f"unknown tiny architecture {arch!r}; expected 'llama', 'qwen3' or 'gpt2'")
    if vocab_size is None:
        vocab_size = len(tiny_tokenizer())
    fields = dict(
        vocab_size=vocab_size,
        hidden_size=hidden_size,
        intermediate_size=2 * hidden_size,
        num_hidden_layers=num_hidden_layers,
        max_position_embeddings=512,
        tie_word_embeddings=arch == "gpt2",  # each class's own default
    )
    if arch == "qwen3":
        fields["head_dim"] = hidden_size // 4
    config = tiny_config(arch, **fields, **config_overrides)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    return model.eval()
