"""Render the example's receipts: small PNG images of shop receipts drawn with Pillow, and inputs.jsonl naming them.

Run it again to regenerate `images/` and `inputs.jsonl` (the same receipts each time): python make_receipts.py
"""

from __future__ import annotations

import json
from pathlib import Path

from PIL import Image, ImageDraw

HERE = Path(__file__).resolve().parent
RECEIPTS = [
    ("CORNER BAKERY", "2026-03-14", [("Sourdough loaf", 1, 4.20), ("Croissant", 3, 1.60)]),
    ("GREEN GROCER", "2026-03-15", [("Apples 1kg", 2, 2.99), ("Leeks", 1, 1.45), ("Basil", 1, 0.99)]),
    ("HARDWARE & CO", "2026-03-16", [("Wood screws x100", 1, 6.50), ("Sandpaper", 4, 0.75)]),
    ("CAFE LUMEN", "2026-03-17", [("Flat white", 2, 3.40), ("Banana bread", 1, 2.80)]),
]


def draw(merchant: str, date: str, items: list[tuple[str, int, float]]) -> Image.Image:
    """One receipt: the merchant, the date, a line per item, and the total, in black on white."""
    lines = [merchant, date, ""]
    lines += [f"{quantity} x {name:<18} {quantity * price:6.2f}" for name, quantity, price in items]
    total = sum(quantity * price for _, quantity, price in items)
    lines += ["", f"TOTAL EUR {total:17.2f}"]
    image = Image.new("RGB", (300, 24 + 16 * len(lines)), "white")
    pen = ImageDraw.Draw(image)
    for index, text in enumerate(lines):
        pen.text((12, 12 + 16 * index), text, fill="black")
    return image


def main() -> None:
    (HERE / "images").mkdir(exist_ok=True)
    with open(HERE / "inputs.jsonl", "w") as rows:
        for index, (merchant, date, items) in enumerate(RECEIPTS, start=1):
            name = f"images/receipt-{index}.png"
            draw(merchant, date, items).save(HERE / name, optimize=True)
            rows.write(json.dumps({"id": f"r{index}", "photo": name}) + "\n")


if __name__ == "__main__":
    main()
