"""The chains the benchmarks run, built by typed factories; each factory registers the engines its chain uses."""

from __future__ import annotations

from pydantic import BaseModel

from chainette import Chain, Step, register_engine

LABEL = "label"
"""The id of the one step of `labelling`."""
SECOND = "second"
"""The id of the last step of `two_fake_steps`."""
RELAY_CHECK = "check {{label}} for review {{chain_input.index}}"
"""The prompt of every step of a `relay` but the first, after the step's number."""


class Review(BaseModel):
    """An input row of the chains on a fake server: a review's number."""

    index: int


class Text(BaseModel):
    """An input row of the fake-backend chains (see harness.write_inputs)."""

    text: str


class Label(BaseModel):
    """What every step answers."""

    label: str
    score: float


def labelling(backend: str, endpoint: str | list[str], concurrency: int, *, adaptive: bool = True) -> Chain:
    """One step labelling each review on `backend` at `endpoint` (one URL, or several replicas), with at most
    `concurrency` requests in flight (engine "bench", model "fake-model"), adaptive or fixed."""
    register_engine(
        "bench",
        backend=backend,
        model="fake-model",
        endpoint=endpoint,
        api_key="none",
        max_concurrency=concurrency,
        adaptive_concurrency=adaptive,
    )
    step = Step(
        id=LABEL,
        input_model=Review,
        output_model=Label,
        engine_name="bench",
        user_prompt="Classify review number {{index}}: it was fine.",
        output_format_instruction="",
    )
    return Chain(name="bench", steps=[step])


def relay(endpoints: list[str], concurrency: int) -> Chain:
    """One step per endpoint, each on an engine of its own ("relay0", "relay1", ...), each step checking the
    previous one's label for the review (no two requests are alike, so that none is answered by the response cache);
    the last step's id is `relay_last(len(endpoints))`."""
    steps = []
    for position, endpoint in enumerate(endpoints):
        engine = f"relay{position}"
        register_engine(engine, backend="vllm", model="fake-model", endpoint=endpoint, api_key="none", max_concurrency=concurrency)
        if position == 0:
            steps.append(Step(id="r0", input_model=Review, output_model=Label, engine_name=engine, user_prompt="Classify review {{index}}"))
        else:
            steps.append(Step(id=f"r{position}", output_model=Label, engine_name=engine, user_prompt=f"Step {position}: {RELAY_CHECK}"))
    return Chain(name=f"relay{len(endpoints)}", steps=steps)


def relay_last(length: int) -> str:
    """The id of the last step of a `relay` over `length` endpoints."""
    return f"r{length - 1}"


def two_steps_on_one_server(endpoint: str, concurrency: int) -> Chain:
    """Two steps on one engine ("shared", model "fake-model" at `endpoint`), sharing its `concurrency` requests in
    flight; the second checks the first's label for the review (no two requests alike). The last step is SECOND."""
    register_engine("shared", backend="vllm", model="fake-model", endpoint=endpoint, api_key="none", max_concurrency=concurrency)
    first = Step(id="first", input_model=Review, output_model=Label, engine_name="shared", user_prompt="Classify review {{index}}")
    second = Step(id=SECOND, output_model=Label, engine_name="shared", user_prompt=f"Step 1: {RELAY_CHECK}")
    return Chain(name="first-row", steps=[first, second])


def _register_fake() -> None:
    """The fake backend's engine "fake"; its answers skip the response cache unless told, and the benchmarks measure it."""
    register_engine("fake", backend="fake", model="m", cache=True)


def two_fake_steps() -> Chain:
    """Two steps on the fake backend (no latency): chainette's own per-row cost; the second reads the chain's input."""
    _register_fake()
    first = Step(id="first", input_model=Text, output_model=Label, engine_name="fake", user_prompt="Classify {{text}}")
    second = Step(id=SECOND, output_model=Label, engine_name="fake", user_prompt="Check {{label}} for {{chain_input.text}}")
    return Chain(name="overhead", steps=[first, second])


def fake_steps(length: int) -> Chain:
    """`length` steps on the fake backend, each checking the previous one's label."""
    _register_fake()
    first = Step(id="s0", input_model=Text, output_model=Label, engine_name="fake", user_prompt="Classify {{text}}")
    rest = [Step(id=f"s{i}", output_model=Label, engine_name="fake", user_prompt="Check {{label}}") for i in range(1, length)]
    return Chain(name=f"long{length}", steps=[first, *rest])
