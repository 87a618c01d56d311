"""The chain the kill tests torture: two steps in sequence on two engines, a sync apply that fans out, filters and
fails some rows, a parallel group of two joined branches (one with an async apply that fans each row out in two,
or filters it, before its step), and a step reading both aliases. Fake backend, so every answer is deterministic;
its latency comes from TORTURE_LATENCY. The steps on "llm" use the response cache (their rows looked up ahead in
groups), those on "judge" do not. The input carries fields named like the executor's own words (skip, ctx, direct,
src, origin) to show they change nothing."""

import asyncio
import os
import zlib

from pydantic import BaseModel

from chainette import Branch, Chain, Step, apply, register_engine


class Doc(BaseModel):
    text: str
    skip: int
    ctx: str
    direct: str
    src: str
    origin: str


class Label(BaseModel):
    label: str


class Part(BaseModel):
    part: str


LATENCY = float(os.environ.get("TORTURE_LATENCY", "0"))
register_engine("llm", backend="fake", model="m", latency=LATENCY, max_concurrency=32, cache=True)
register_engine("judge", backend="fake", model="j", latency=LATENCY, max_concurrency=32)


def split(item: Label) -> list[Part]:
    """Two parts per row; none (filtered) for one row in ten; an error for one in thirteen."""
    digest = zlib.crc32(item.label.encode())
    if digest % 13 == 0:
        raise ValueError("unlucky row")
    return [] if digest % 10 == 0 else [Part(part=f"{item.label}/a"), Part(part=f"{item.label}/b")]


async def tag(item: Part) -> list[Part]:
    """Two tagged parts per part (the branch fans out before its join); none for one part in seven."""
    await asyncio.sleep(0)
    return [] if zlib.crc32(item.part.encode()) % 7 == 0 else [Part(part=f"{item.part}!"), Part(part=f"{item.part}?")]


first = Step(id="first", input_model=Doc, output_model=Label, engine_name="llm", user_prompt="{{text}} {{skip}}")
second = Step(id="second", output_model=Label, engine_name="judge", user_prompt="is {{label}} right for {{chain_input.src}}?")
left = Branch(name="left", steps=[Step(id="left_step", output_model=Label, engine_name="llm", user_prompt="L {{part}}")]).join("l")
right_step = Step(id="right_step", output_model=Label, engine_name="llm", user_prompt="R {{part}}")
right = Branch(name="right", steps=[apply(tag, output_model=Part), right_step]).join("r")
last = Step(
    id="last",
    output_model=Label,
    engine_name="judge",
    user_prompt="{{l.label}} | {{r | map(attribute='label') | join(' + ')}} | {{chain_input.src}}",
)

chain = Chain(name="torture", steps=[first, second, apply(split, output_model=Part), [left, right], last])

# Each node and the frontier file it reads, in order: what the invariant checks walk.
TOPOLOGY = [
    ("first", "chain_input.jsonl"),
    ("second", "first.jsonl"),
    ("split", "second.jsonl"),
    ("left_step", "split.jsonl"),
    ("tag", "split.jsonl"),
    ("right_step", "tag.jsonl"),
    ("last", "group0.joined.jsonl"),
]
# Each node (the input too) and the nodes whose rows reach it, upstream first: which nodes run in sequence.
UPSTREAM = {
    "chain_input": (),
    "first": ("chain_input",),
    "second": ("first",),
    "split": ("second",),
    "left_step": ("split",),
    "tag": ("split",),
    "right_step": ("tag",),
    "last": ("left_step", "right_step"),
}
