"""Structured extraction from receipt images: each row names a PNG (relative to inputs.jsonl), the step places it in
the user message, the model reads the merchant, date, items and total, and a Python check compares the total with the
items."""

from pydantic import BaseModel, Field

from chainette import Chain, Image, Step, apply, register_engine


class ReceiptPhoto(BaseModel):
    id: str
    photo: Image


class Item(BaseModel):
    name: str
    quantity: int = Field(ge=0)
    amount: float = Field(ge=0)


class Receipt(BaseModel):
    merchant: str
    date: str = Field(description="as written on the receipt, YYYY-MM-DD")
    items: list[Item]
    total: float = Field(ge=0)
    currency: str = Field(description="ISO 4217 code, e.g. EUR")


class Checked(BaseModel):
    merchant: str
    total: float
    items_total: float
    consistent: bool


def check_total(receipt: Receipt) -> Checked:
    """Compare the printed total with the sum of the item amounts (a plain Python step)."""
    items_total = round(sum(item.amount for item in receipt.items), 2)
    return Checked(
        merchant=receipt.merchant, total=receipt.total, items_total=items_total, consistent=abs(items_total - receipt.total) < 0.01
    )


register_engine("llm", backend="fake", model="fake-model")

read = Step(
    id="receipt",
    input_model=ReceiptPhoto,
    output_model=Receipt,
    engine_name="llm",
    system_prompt="You read shop receipts. Copy names and numbers exactly as printed.",
    user_prompt="Extract the fields of this receipt:\n{{photo}}",
)

chain = Chain(name="receipts", steps=[read, apply(check_total, id="check", output_model=Checked)])
