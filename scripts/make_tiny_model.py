"""Write a tiny random-weight Llama (seeded, no hub) that `vllm serve` loads on CPU: the real-vLLM test tier's model.

Usage: python scripts/make_tiny_model.py OUT_DIR  (run with the real-vLLM venv's python: it needs torch,
transformers and tokenizers).
"""

from __future__ import annotations

from pathlib import Path
import sys
from typing import Any

CHAT_TEMPLATE = (
    "{% for message in messages %}<|{{ message['role'] }}|>{{ message['content'] }}<|end|>{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)
SPECIAL = ["<s>", "</s>", "<unk>", "<|end|>", "<|system|>", "<|user|>", "<|assistant|>"]


def corpus() -> list[str]:
    """Text to train the byte-level BPE on: JSON-ish snippets, so that structured answers tokenize well."""
    words = [
        "label",
        "score",
        "positive",
        "negative",
        "neutral",
        "review",
        "text",
        "name",
        "age",
        "city",
        "true",
        "false",
        "null",
        "the",
        "a",
        "of",
        "and",
    ]
    return [f'{{"{w}": "{v}", "n": {i}}}' for i, (w, v) in enumerate(zip(words, reversed(words), strict=True))] * 20


def tokenizer(special: list[str]) -> Any:
    """A byte-level BPE tokenizer of 512 tokens trained on `corpus()`, with the `special` tokens (a transformers fast tokenizer)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    trained = Tokenizer(models.BPE(unk_token="<unk>"))
    trained.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trained.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=512, special_tokens=special, initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    trained.train_from_iterator(corpus(), trainer)
    return PreTrainedTokenizerFast(tokenizer_object=trained, bos_token="<s>", eos_token="<|end|>", unk_token="<unk>", pad_token="</s>")


def text_config(fast: Any, **more: Any) -> Any:
    """The tiny Llama's config (2 layers of 128) for the tokenizer `fast`, with `more` settings."""
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=fast.vocab_size,
        hidden_size=128,
        intermediate_size=256,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=1024,
        bos_token_id=fast.bos_token_id,
        eos_token_id=fast.eos_token_id,
        pad_token_id=fast.pad_token_id,
        **more,
    )


def main(out: Path) -> None:
    import torch
    from transformers import LlamaForCausalLM

    torch.manual_seed(0)
    fast = tokenizer(SPECIAL)
    fast.chat_template = CHAT_TEMPLATE
    model = LlamaForCausalLM(text_config(fast, tie_word_embeddings=True)).to(torch.bfloat16)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    fast.save_pretrained(out)
    print(out)


if __name__ == "__main__":
    main(Path(sys.argv[1]))
