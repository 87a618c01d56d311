"""A one-step chain on the `echo` backend: each note comes back as a card titled with the note itself.

Install the plugin first (`pip install ./examples/plugin-echo`), then:
chainette run examples/plugin-echo/chain.py:chain -i examples/plugin-echo/inputs.jsonl -o runs/echo
"""

from pydantic import BaseModel

from chainette import Chain, Step, register_engine


class Note(BaseModel):
    text: str


class Card(BaseModel):
    title: str
    tags: list[str]
    stars: int


register_engine("echo", backend="echo", model="echo-1", prefix="echo: ")

card = Step(id="card", input_model=Note, output_model=Card, engine_name="echo", user_prompt="{{text}}")

chain = Chain(name="echo-cards", steps=[card])
