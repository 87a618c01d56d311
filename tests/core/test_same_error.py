"""Errors that are the same for every row: permanent statuses stop the run, a step whose first rows all fail alike
stops with one paragraph, and a run in which a step answered no row exits non-zero."""

from __future__ import annotations

import asyncio
import json
import re
import textwrap

import pytest

from chainette import Branch, Chain, EngineError, RetryableError, RowError, Step, apply, register_engine
from chainette.cli import main
from chainette.errors import error_code, error_for_status
from chainette.events import Event, NodeFinished, NodeStarted
from chainette.http import JsonHttpClient
from chainette.outcome import exit_status
import chainette.policy
from chainette.policy import SAME_ERROR_ROWS, same_error_key
from chainette.testing import Fault

from .conftest import Label, Text

SCHEMA_500 = "engine 's': HTTP 500: response_format json_schema is not supported"
CONCURRENCY = 4
QUOTA_BODY = {
    "error": {
        "message": "You exceeded your current quota, please check your plan and billing details.",
        "type": "insufficient_quota",
        "code": "insufficient_quota",
    }
}


@pytest.fixture(autouse=True)
def fast_retries(monkeypatch):
    monkeypatch.setattr(chainette.policy, "BASE_DELAY", 0.001)


def echo(request, attempt):
    """Answer with the row's text as label."""
    text = re.search(r"<<(.*?)>>", request.messages[-1]["content"]).group(1)
    return json.dumps({"label": text})


def chain() -> Chain:
    return Chain(name="c", steps=[Step(id="label", input_model=Text, output_model=Label, engine_name="s", user_prompt="<<{{text}}>>")])


def rows(n: int) -> list[dict[str, str]]:
    return [{"text": f"row{i}"} for i in range(n)]


def errors(tmp_path) -> list[dict]:
    return [json.loads(line) for line in (tmp_path / "o" / "errors.jsonl").read_text().splitlines()]


def test_the_same_500_on_every_row_stops_the_step_after_its_first_rows(scripted, tmp_path):
    backend = scripted(lambda request, attempt: RetryableError(SCHEMA_500, kind="http_500"))
    register_engine("s", backend="scripted", model="m", max_retries=2)
    with pytest.raises(EngineError) as excinfo:
        chain().run(rows(20), output_dir=tmp_path / "o")
    message = str(excinfo.value)
    assert f"Step 'label' stopped: its first {SAME_ERROR_ROWS} rows all failed the same way on engine 's' (http_500)" in message
    assert "json_schema is not supported (gave up after 3 attempts)" in message
    assert "model name and endpoint" in message and "structured output" in message and "--retry-errors" in message
    assert len(errors(tmp_path)) == SAME_ERROR_ROWS
    run = json.loads((tmp_path / "o" / "run.json").read_text())
    assert run["status"] == "failed" and "Step 'label' stopped" in run["error"]
    assert backend.events == ["start s", "close s", "stop s"]


def test_the_same_400_on_every_row_stops_the_step_without_asking_the_rest(scripted, tmp_path):
    unsupported = RowError("engine 's': HTTP 400: \"m\" does not support thinking", kind="http_400")
    backend = scripted(lambda request, attempt: unsupported)
    register_engine("s", backend="scripted", model="m", max_concurrency=1)
    with pytest.raises(EngineError, match="does not support thinking"):
        chain().run(rows(20), output_dir=tmp_path / "o")
    assert len(backend.requests) == SAME_ERROR_ROWS
    assert [e["error_type"] for e in errors(tmp_path)] == ["http_400"] * SAME_ERROR_ROWS


def test_messages_differing_only_in_numbers_and_ids_count_as_the_same():
    first = same_error_key("engine 's': HTTP 400: request req_8f3a2 asks 9000 tokens, over 8192 (row 3)")
    other = same_error_key("engine 's': HTTP 400: request req_1c77e asks 9100 tokens, over 8192 (row 17)")
    assert first == other
    assert same_error_key("unknown field 'a'") != same_error_key("unknown field 'b'")


def test_rows_failing_differently_are_all_recorded_and_the_run_goes_on(scripted, tmp_path):
    def answer(request, attempt):
        word = "apple" if int(request.row_id) % 2 else "pear"
        return RowError(f"engine 's': HTTP 400: the server cannot read '{word}'", kind="http_400")

    scripted(answer)
    register_engine("s", backend="scripted", model="m")
    result = chain().run(rows(20), output_dir=tmp_path / "o")
    assert result.stats["status"] == "completed"
    assert len(result.errors) == 20
    assert exit_status(result.stats)[0] == 1


def test_one_success_among_the_first_rows_disables_the_stop(scripted, tmp_path):
    def answer(request, attempt):
        return echo(request, attempt) if request.row_id == "2" else RetryableError(SCHEMA_500, kind="http_500")

    scripted(answer)
    register_engine("s", backend="scripted", model="m", max_retries=1, max_concurrency=1)
    result = chain().run(rows(20), output_dir=tmp_path / "o")
    assert result.stats["status"] == "completed"
    assert [r.label for r in result["label"]] == ["row2"]
    assert len(result.errors) == 19
    assert exit_status(result.stats)[0] == 3, "completed, some rows failed"


def test_a_model_failing_validation_on_every_row_does_not_stop_the_step(scripted, tmp_path):
    scripted(lambda request, attempt: "not json at all")
    register_engine("s", backend="scripted", model="m")
    result = chain().run(rows(20), output_dir=tmp_path / "o")
    assert result.stats["status"] == "completed"
    assert [e["error_type"] for e in result.errors] == ["validation"] * 20


def test_resuming_after_the_stop_completes_every_row(scripted, tmp_path):
    fixed: list[bool] = []
    backend = scripted(lambda request, attempt: echo(request, attempt) if fixed else RetryableError(SCHEMA_500, kind="http_500"))
    register_engine("s", backend="scripted", model="m", max_retries=0, max_concurrency=1)
    with pytest.raises(EngineError):
        chain().run(rows(20), output_dir=tmp_path / "o")
    fixed.append(True)
    asked = len(backend.requests)
    result = chain().run(rows(20), output_dir=tmp_path / "o")
    assert len(backend.requests) - asked == 20 - SAME_ERROR_ROWS
    assert len(result["label"]) == 20 - SAME_ERROR_ROWS and len(result.errors) == SAME_ERROR_ROWS
    result = chain().run(rows(20), output_dir=tmp_path / "o", retry_errors=True)
    assert [r.label for r in result["label"]] == [f"row{i}" for i in range(20)]
    assert result.errors == [] and result.stats["status"] == "completed"


def test_501_and_insufficient_quota_429_are_engine_errors():
    unsupported = error_for_status(501, "Not Implemented", engine="e")
    assert isinstance(unsupported, EngineError) and unsupported.kind == "unsupported"
    quota = error_for_status(429, QUOTA_BODY["error"]["message"], engine="e", code="insufficient_quota")
    assert isinstance(quota, EngineError) and quota.kind == "quota" and "credit" in str(quota)
    assert isinstance(error_for_status(429, "insufficient_quota: no credit", engine="e"), EngineError)
    assert isinstance(error_for_status(429, "Rate limit reached", engine="e", code="rate_limit_exceeded"), RetryableError)


def test_error_code_reads_openai_style_bodies():
    assert error_code(json.dumps(QUOTA_BODY)) == "insufficient_quota"
    assert error_code(b'{"error": {"message": "x", "code": 404, "type": "NotFoundError"}}') == "NotFoundError"
    assert error_code('{"error": "plain"}') is None
    assert error_code("not json") is None
    assert error_code("[1]") is None


@pytest.mark.parametrize(
    ("fault", "error", "kind"),
    [
        (Fault(status=501), EngineError, "unsupported"),
        (Fault(status=429, body=QUOTA_BODY), EngineError, "quota"),
        (Fault(status=429, body={"error": {"message": "Rate limit reached", "code": "rate_limit_exceeded"}}), RetryableError, "http_429"),
    ],
)
async def test_http_statuses_are_classified_with_the_error_code(fake_server, fault, error, kind):
    engine = register_engine("e", backend="fake", model="fake-model", timeout=0.5)
    fake_server.fail_next(fault)
    client = JsonHttpClient(engine, f"{fake_server.base_url}/v1")
    with pytest.raises(error) as excinfo:
        await client.post("/chat/completions", {"model": "fake-model", "messages": [{"role": "user", "content": "hi"}]})
    await client.aclose()
    assert excinfo.value.kind == kind


def test_a_permanent_status_stops_the_run_at_its_first_request(scripted, tmp_path):
    backend = scripted(lambda request, attempt: error_for_status(501, "Not Implemented", engine="s"))
    register_engine("s", backend="scripted", model="m", max_concurrency=1)
    with pytest.raises(EngineError, match="HTTP 501"):
        chain().run(rows(20), output_dir=tmp_path / "o")
    assert len(backend.requests) == 1


def test_exit_status_of_the_run_figures():
    def figures(ok, failed, filtered=0, kind="step", invalid=0, rows_failed=None):
        node = {"kind": kind, "rows_in": ok + failed + filtered, "ok": ok, "failed": failed, "filtered": filtered}
        rows_failed = failed if rows_failed is None else rows_failed
        return {"input": {"rows": ok + failed + filtered + invalid, "invalid": invalid}, "rows_failed": rows_failed, "steps": {"n": node}}

    assert exit_status(figures(20, 0)) == (0, None)
    assert exit_status(figures(1, 19)) == (
        3,
        "19 input rows failed: run the same command with --retry-errors to run them again (see errors.jsonl).",
    )
    assert exit_status(figures(1, 19, rows_failed=7))[1] == (
        "7 input rows failed (19 error lines: a row can fail in several branches, samples or fan-out children): "
        "run the same command with --retry-errors to run them again (see errors.jsonl)."
    )
    assert exit_status(figures(5, 0, invalid=1)) == (3, "1 input row not valid: fix them in the input (see errors.jsonl).")
    assert exit_status(figures(0, 0, 20, kind="apply")) == (0, None)
    assert exit_status(figures(0, 20)) == (1, "step 'n' answered none of its 20 rows (20 failed): see errors.jsonl.")
    assert exit_status(figures(0, 0, invalid=3))[0] == 1


def write_chain(tmp_path) -> str:
    path = tmp_path / "same_error_chain.py"
    source = """
        from chainette import Chain, Step
        from pydantic import BaseModel

        class Text(BaseModel):
            text: str

        class Label(BaseModel):
            label: str

        chain = Chain(name="c", steps=[Step(id="label", input_model=Text, output_model=Label, engine_name="s", user_prompt="<<{{text}}>>")])
    """
    path.write_text(textwrap.dedent(source))
    (tmp_path / "in.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows(20)))
    return f"{path}:chain"


def run_cli(tmp_path, *extra: str) -> int:
    return main(["run", write_chain(tmp_path), "-i", str(tmp_path / "in.jsonl"), "-o", str(tmp_path / "o"), "-q", *extra])


def test_cli_exits_1_when_a_step_answered_no_row(scripted, tmp_path, capsys):
    scripted(lambda request, attempt: "not json at all")
    register_engine("s", backend="scripted", model="m")
    assert run_cli(tmp_path) == 1
    shown = " ".join(capsys.readouterr().out.split())
    assert "Exit status 1: step 'label' answered none of its 20 rows (20 failed): see errors.jsonl." in shown


def test_cli_json_logs_give_the_reason_on_stderr(scripted, tmp_path, capsys):
    scripted(lambda request, attempt: "not json at all")
    register_engine("s", backend="scripted", model="m")
    assert run_cli(tmp_path, "--json-logs") == 1
    assert "answered none of its 20 rows" in capsys.readouterr().err


def test_cli_exits_1_with_the_paragraph_when_the_step_stops(scripted, tmp_path, capsys):
    scripted(lambda request, attempt: RetryableError(SCHEMA_500, kind="http_500"))
    register_engine("s", backend="scripted", model="m", max_retries=1)
    assert run_cli(tmp_path) == 1
    assert "Step 'label' stopped" in " ".join(capsys.readouterr().err.split())


def test_cli_exits_0_when_every_row_succeeded(scripted, tmp_path):
    scripted(echo)
    register_engine("s", backend="scripted", model="m")
    assert run_cli(tmp_path) == 0


def test_an_apply_that_filters_every_row_is_a_success(scripted, tmp_path):
    scripted(echo)
    register_engine("s", backend="scripted", model="m")
    drop = apply(lambda label: [], id="drop", input_model=Label, output_model=Label)
    steps = [Step(id="label", input_model=Text, output_model=Label, engine_name="s", user_prompt="<<{{text}}>>"), drop]
    result = Chain(name="c", steps=steps).run(rows(3), output_dir=tmp_path / "o")
    assert exit_status(result.stats) == (0, None)


def misspelt_chain() -> Chain:
    """A step reading a field the apply before it does not return: no model says so, so only rendering finds out."""
    extract = apply(lambda text: {"name": text.text}, id="extract", input_model=Text)
    return Chain(name="c", steps=[extract, Step(id="brand", output_model=Label, engine_name="s", user_prompt="{{extract.brand}}")])


def test_the_same_render_error_on_every_row_stops_the_step_after_its_first_rows(scripted, tmp_path):
    backend = scripted(echo)
    register_engine("s", backend="scripted", model="m")
    with pytest.raises(EngineError) as excinfo:
        misspelt_chain().run(rows(20), output_dir=tmp_path / "o")
    message = str(excinfo.value)
    assert message.startswith(
        f"Step 'brand' stopped: the prompts of its first {SAME_ERROR_ROWS} rows all failed to render the same way: "
        "cannot render the user_prompt: 'dict object' has no attribute 'brand'. "
    )
    assert "return annotation" in message and "resumes the run" in message and "--overwrite" in message
    assert [(e["step_id"], e["error_type"]) for e in errors(tmp_path)] == [("brand", "template")] * SAME_ERROR_ROWS
    run = json.loads((tmp_path / "o" / "run.json").read_text())
    assert run["status"] == "failed" and "Step 'brand' stopped" in run["error"]
    assert backend.requests == []


def test_a_run_stopped_by_a_render_error_resumes_where_it_stopped(scripted, tmp_path):
    scripted(echo)
    register_engine("s", backend="scripted", model="m")
    for _ in range(2):
        with pytest.raises(EngineError, match="Step 'brand' stopped"):
            misspelt_chain().run(rows(20), output_dir=tmp_path / "o")
    failed = [e["row_id"] for e in errors(tmp_path)]
    assert sorted(failed, key=int) == [str(i) for i in range(2 * SAME_ERROR_ROWS)], "the second run went on with the next rows"


def test_cli_exits_1_with_the_paragraph_when_a_render_error_stops_the_step(scripted, tmp_path, capsys):
    scripted(echo)
    register_engine("s", backend="scripted", model="m")
    path = tmp_path / "render_chain.py"
    path.write_text(
        "from chainette import Chain, Step, apply\nfrom pydantic import BaseModel\n"
        "class Label(BaseModel):\n    label: str\n"
        "def extract(row):\n    return {'name': row['text']}\n"
        "chain = Chain(name='c', steps=[apply(extract), Step(id='brand', output_model=Label, engine_name='s', user_prompt='{{extract.brand}}')])\n"
    )
    (tmp_path / "in.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows(20)))
    assert main(["run", f"{path}:chain", "-i", str(tmp_path / "in.jsonl"), "-o", str(tmp_path / "o"), "-q"]) == 1
    err = " ".join(capsys.readouterr().err.split())
    assert "Step 'brand' stopped: the prompts of its first 5 rows all failed to render the same way" in err
    assert "Traceback" not in err


@pytest.mark.parametrize("failing_prompt", ["<<{{text}}>>", "<<{{text.brand}}>>"], ids=["backend error", "render error"])
async def test_a_step_stopped_by_the_same_error_cancels_its_sibling_branches_at_once(failing_prompt, scripted, tmp_path):
    """The sibling's requests hang until the test lets them go (after the run ended): had the sibling gone on behind
    the stop, it would ask about every row then; stopped with the group, it asked only as many as it had in flight."""
    fixed, released = [], asyncio.Event()

    async def answer(request, attempt):
        if request.step_id == "failing":
            return echo(request, attempt) if fixed else RowError("engine 's': HTTP 400: response_format is not supported", kind="http_400")
        await released.wait()
        return echo(request, attempt)

    backend = scripted(answer)
    register_engine("s", backend="scripted", model="m", max_retries=0)
    register_engine("t", backend="scripted", model="m", max_concurrency=CONCURRENCY)
    failing = Branch(name="a", steps=[Step(id="failing", output_model=Label, engine_name="s", user_prompt=failing_prompt)])
    sibling = Branch(name="b", steps=[Step(id="sibling", output_model=Label, engine_name="t", user_prompt="again <<{{text}}>>")])
    chain = Chain(name="c", steps=[apply(lambda item: item, id="first", input_model=Text, output_model=Text), [sibling, failing]])

    def asked(step: str) -> list[str]:
        return [request.row_id for request in backend.requests if request.step_id == step]

    events: list[Event] = []
    with pytest.raises(EngineError, match="Step 'failing' stopped"):
        await chain.arun(rows(400), output_dir=tmp_path / "o", reporter=events.append)
    released.set()
    for _ in range(100):
        await asyncio.sleep(0)
    assert len(asked("sibling")) == CONCURRENCY, "the sibling sent no request after the stop"
    started = [event.node for event in events if isinstance(event, NodeStarted)]
    finished = {event.node: event.complete for event in events if isinstance(event, NodeFinished)}
    assert sorted(finished) == sorted(started), "every node that started finished, the cancelled sibling too"
    assert not finished["failing"] and not finished["sibling"]
    assert json.loads((tmp_path / "o" / "run.json").read_text())["status"] == "failed"
    if failing_prompt == "<<{{text.brand}}>>":
        return

    fixed.append(True)
    result = await chain.arun(rows(400), output_dir=tmp_path / "o", retry_errors=True)
    for step in ("failing", "sibling"):
        assert sorted(record["row_id"] for record in result.records(step)) == sorted(str(i) for i in range(400)), step
    assert len(asked("sibling")) == 400 + CONCURRENCY, "the rows in flight at the stop were asked again, the others once"
    assert result.errors == [] and result.stats["status"] == "completed"
