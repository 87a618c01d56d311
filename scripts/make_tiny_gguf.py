"""Write a tiny random-weight llama GGUF (seeded, no hub) for the real llama-cpp-python tier.

Usage: python make_tiny_gguf.py OUT.gguf. The vocabulary is SentencePiece-style: the special tokens, every
printable ASCII character and the 256 byte tokens, so that any text, and any JSON a grammar allows, can be
written. The model's answers are random; the server's grammar-constrained decoding is what the tests exercise.
"""

from __future__ import annotations

from pathlib import Path
import sys

import gguf
import numpy as np

EMBED, HEADS, LAYERS, FEED_FORWARD, CONTEXT = 64, 4, 2, 128, 2048
CHATML = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def vocabulary() -> tuple[list[str], list[float], list[int]]:
    """Tokens, their scores and their types: unknown, bos, eos, the printable characters, then the bytes."""
    tokens = ["<unk>", "<s>", "</s>"]
    types = [gguf.TokenType.UNKNOWN, gguf.TokenType.CONTROL, gguf.TokenType.CONTROL]
    for code in range(32, 127):
        tokens.append("\u2581" if code == 32 else chr(code))
        types.append(gguf.TokenType.NORMAL)
    for byte in range(256):
        tokens.append(f"<0x{byte:02X}>")
        types.append(gguf.TokenType.BYTE)
    scores = [0.0] * 3 + [-1.0] * 95 + [-10.0] * 256
    return tokens, scores, [int(t) for t in types]


def main(out: Path) -> None:
    rng = np.random.default_rng(0)
    tokens, scores, types = vocabulary()
    writer = gguf.GGUFWriter(str(out), "llama")
    writer.add_name("chainette-tiny-random")
    writer.add_context_length(CONTEXT)
    writer.add_embedding_length(EMBED)
    writer.add_block_count(LAYERS)
    writer.add_feed_forward_length(FEED_FORWARD)
    writer.add_head_count(HEADS)
    writer.add_head_count_kv(HEADS)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_rope_dimension_count(EMBED // HEADS)
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)
    writer.add_tokenizer_model("llama")
    writer.add_token_list(tokens)
    writer.add_token_scores(scores)
    writer.add_token_types(types)
    writer.add_unk_token_id(0)
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(2)
    writer.add_chat_template(CHATML)

    def weight(*shape: int) -> np.ndarray:
        return (rng.standard_normal(shape) * 0.02).astype(np.float32)

    writer.add_tensor("token_embd.weight", weight(len(tokens), EMBED))
    for layer in range(LAYERS):
        block = f"blk.{layer}"
        writer.add_tensor(f"{block}.attn_norm.weight", np.ones(EMBED, dtype=np.float32))
        for name in ("attn_q", "attn_k", "attn_v", "attn_output"):
            writer.add_tensor(f"{block}.{name}.weight", weight(EMBED, EMBED))
        writer.add_tensor(f"{block}.ffn_norm.weight", np.ones(EMBED, dtype=np.float32))
        writer.add_tensor(f"{block}.ffn_gate.weight", weight(FEED_FORWARD, EMBED))
        writer.add_tensor(f"{block}.ffn_up.weight", weight(FEED_FORWARD, EMBED))
        writer.add_tensor(f"{block}.ffn_down.weight", weight(EMBED, FEED_FORWARD))
    writer.add_tensor("output_norm.weight", np.ones(EMBED, dtype=np.float32))
    writer.add_tensor("output.weight", weight(len(tokens), EMBED))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
