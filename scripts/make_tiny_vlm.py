"""Write a tiny random-weight LLaVA (a CLIP vision tower and a Llama; seeded, no hub) with the processor and chat
template `vllm serve` needs to take images: the real-vLLM test tier's vision-language model.

Usage: python scripts/make_tiny_vlm.py OUT_DIR  (run with the real-vLLM venv's python: it needs torch, transformers and
tokenizers). The tokenizer is scripts/make_tiny_model.py's, with `<image>` added; an image becomes 4 tokens.
"""

from __future__ import annotations

from pathlib import Path
import sys

from make_tiny_model import CHAT_TEMPLATE, SPECIAL, text_config, tokenizer

IMAGE_TOKEN = "<image>"
IMAGE_SIZE, PATCH = 30, 15  # (30 / 15)² = 4 patches: 4 image tokens per image


def main(out: Path) -> None:
    import torch
    from transformers import CLIPImageProcessor, CLIPVisionConfig, LlavaConfig, LlavaForConditionalGeneration, LlavaProcessor

    torch.manual_seed(0)
    fast = tokenizer([*SPECIAL, IMAGE_TOKEN])
    fast.add_special_tokens({"additional_special_tokens": [IMAGE_TOKEN]})
    text = text_config(fast)
    vision = CLIPVisionConfig(
        hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2, image_size=IMAGE_SIZE, patch_size=PATCH
    )
    config = LlavaConfig(
        vision_config=vision,
        text_config=text,
        image_token_index=fast.convert_tokens_to_ids(IMAGE_TOKEN),
        vision_feature_layer=-2,
        vision_feature_select_strategy="default",
        projector_hidden_act="gelu",
    )
    model = LlavaForConditionalGeneration(config).to(torch.bfloat16)
    images = CLIPImageProcessor(size={"shortest_edge": IMAGE_SIZE}, crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE})
    processor = LlavaProcessor(
        image_processor=images,
        tokenizer=fast,
        patch_size=PATCH,
        vision_feature_select_strategy="default",
        image_token=IMAGE_TOKEN,
        num_additional_image_tokens=1,
        chat_template=CHAT_TEMPLATE,
    )
    fast.chat_template = CHAT_TEMPLATE
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    _vision_names(out / "model.safetensors")
    processor.save_pretrained(out)
    fast.save_pretrained(out)
    print(out)


def _vision_names(weights: Path) -> None:
    """Name the vision tower's weights as LLaVA checkpoints on the hub do (`vision_tower.vision_model.*`), the names
    vLLM loads: transformers 5 saves them without `vision_model`."""
    from safetensors.torch import load_file, save_file

    tensors = load_file(weights)
    renamed = {
        name.replace("vision_tower.", "vision_tower.vision_model.", 1) if name.startswith("vision_tower.") else name: t
        for name, t in tensors.items()
    }
    save_file(renamed, weights, metadata={"format": "pt"})


if __name__ == "__main__":
    main(Path(sys.argv[1]))
