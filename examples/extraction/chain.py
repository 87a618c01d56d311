"""Structured extraction with nested models: an invoice's header and its line items, then a check of the totals."""

from pydantic import BaseModel, Field

from chainette import Chain, Step, apply, register_engine


class Email(BaseModel):
    sender: str
    body: str


class LineItem(BaseModel):
    description: str
    quantity: int = Field(ge=0)
    unit_price: float = Field(ge=0)


class Address(BaseModel):
    street: str
    city: str
    country: str


class Invoice(BaseModel):
    invoice_number: str
    customer: str
    billing_address: Address
    items: list[LineItem]
    total: float = Field(ge=0)


class Checked(BaseModel):
    invoice_number: str
    items: int
    computed_total: float
    stated_total: float
    consistent: bool


def check_total(invoice: Invoice) -> Checked:
    """Compare the stated total with the sum of the line items (a plain Python step)."""
    computed = round(sum(item.quantity * item.unit_price for item in invoice.items), 2)
    return Checked(
        invoice_number=invoice.invoice_number,
        items=len(invoice.items),
        computed_total=computed,
        stated_total=invoice.total,
        consistent=abs(computed - invoice.total) < 0.01,
    )


register_engine("llm", backend="fake", model="fake-model")

extract = Step(
    id="invoice",
    input_model=Email,
    output_model=Invoice,
    engine_name="llm",
    system_prompt="You extract invoices from e-mails. Use the numbers exactly as written.",
    user_prompt="From: {{sender}}\n\n{{body}}",
)

chain = Chain(name="extraction", steps=[extract, apply(check_total, output_model=Checked)])
