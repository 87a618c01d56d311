"""Media in the rows: the Image, Document and Audio field types (every accepted form, errors naming the place), their
references in rows and outputs, their placement in the user message, the cache keys, and a changed file noticed."""

from __future__ import annotations

import base64
import hashlib
import io
import json
from pathlib import Path
import tracemalloc

from pydantic import BaseModel
import pytest

from chainette import Audio, Chain, ConfigError, Document, Image, Step, hookimpl, register_engine
from chainette.cache.keys import RequestKeys
from chainette.client import content_text
from chainette.errors import RowError
from chainette.execution.prompts import Prompts, placed_media
from chainette.frontier import Row
from chainette.inputs import read_file, validate
from chainette.media import Media, is_reference, read_bytes, sniff
from chainette.plugins import get_plugins

from .conftest import Label, ScriptedBackend


class MediaScripted(ScriptedBackend):
    """A scripted backend that says it takes every media kind."""

    @hookimpl
    def check_input_media(self, config, fields):
        self.events.append(f"media {sorted(fields.items())}")


@pytest.fixture
def scripted():
    """Register a MediaScripted as backend 'scripted' and return it."""

    def make(answer) -> MediaScripted:
        backend = MediaScripted(answer)
        get_plugins().register("scripted", backend)
        return backend

    return make


PNG = base64.b64decode("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8DwHwAFBQIAX8jx0gAAAABJRU5ErkJggg==")
PDF = b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n1 0 obj<<>>endobj\ntrailer<<>>\n%%EOF\n"
WAV = b"RIFF\x24\x00\x00\x00WAVEfmt \x10\x00\x00\x00\x01\x00\x01\x00\x40\x1f\x00\x00\x80\x3e\x00\x00\x02\x00\x10\x00data\x00\x00\x00\x00"


@pytest.fixture(autouse=True)
def media_store(tmp_path, monkeypatch):
    """Bytes given directly are kept in a folder of the test's own."""
    monkeypatch.setenv("CHAINETTE_MEDIA_DIR", str(tmp_path / "store"))


class Receipt(BaseModel):
    photo: Image
    note: str = ""


class Scan(BaseModel):
    pages: list[Document]
    memo: Audio | None = None


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.mark.parametrize(
    ("head", "media_type"),
    [
        (PNG, "image/png"),
        (b"\xff\xd8\xff\xe0\x00\x10JFIF", "image/jpeg"),
        (b"GIF89a\x01\x00", "image/gif"),
        (b"RIFF\x00\x00\x00\x00WEBPVP8 ", "image/webp"),
        (PDF, "application/pdf"),
        (WAV, "audio/wav"),
        (b"ID3\x04\x00", "audio/mpeg"),
        (b"\xff\xfb\x90\x00", "audio/mpeg"),
        (b"fLaC\x00\x00", "audio/flac"),
        (b"OggS\x00\x02", "audio/ogg"),
        (b"plain text", None),
        (b"RIFF\x00\x00\x00\x00AVI LIST", None),
    ],
)
def test_the_media_type_is_detected_from_the_bytes(head, media_type):
    assert sniff(head[:16]) == media_type


def test_a_relative_path_is_read_from_the_input_files_folder(tmp_path):
    folder = tmp_path / "data"
    (folder / "img").mkdir(parents=True)
    (folder / "img" / "a.png").write_bytes(PNG)
    (folder / "rows.jsonl").write_text('{"photo": "img/a.png"}\n')
    raw = next(read_file(folder / "rows.jsonl"))
    data = validate(raw, json.loads(raw.value), Receipt)
    assert data["photo"] == {"media": "image", "media_type": "image/png", "sha256": sha(PNG), "path": str(folder / "img" / "a.png")}


def test_a_missing_file_names_the_line_the_field_and_the_folder(tmp_path):
    (tmp_path / "rows.jsonl").write_text('{"photo": "ok.png"}\n{"photo": "gone.png"}\n')
    (tmp_path / "ok.png").write_bytes(PNG)
    second = list(read_file(tmp_path / "rows.jsonl"))[1]
    with pytest.raises(ValueError) as caught:
        validate(second, json.loads(second.value), Receipt)
    message = str(caught.value)
    assert f"{tmp_path / 'rows.jsonl'}:2" in message and "field 'photo'" in message
    assert f"no such file: {tmp_path / 'gone.png'} (a relative path is read from {tmp_path})" in message


def test_a_python_objects_relative_path_is_read_from_the_current_directory(tmp_path, monkeypatch):
    (tmp_path / "a.png").write_bytes(PNG)
    monkeypatch.chdir(tmp_path)
    assert Receipt.model_validate({"photo": "a.png"}).photo.path == str(tmp_path / "a.png")


def test_bytes_a_data_url_and_a_datasets_dict_are_kept_once_in_the_store_by_hash(tmp_path):
    url = "data:image/png;base64," + base64.b64encode(PNG).decode()
    values = [PNG, bytearray(PNG), url, {"bytes": PNG, "path": None}]
    made = [Receipt.model_validate({"photo": value}).model_dump(mode="json")["photo"] for value in values]
    assert len({json.dumps(reference) for reference in made}) == 1
    stored = Path(made[0]["path"])
    assert stored.parent.parent == tmp_path / "store" and stored.read_bytes() == PNG and made[0]["sha256"] == sha(PNG)


def test_a_datasets_dict_without_bytes_is_read_by_its_path(tmp_path):
    (tmp_path / "clip.wav").write_bytes(WAV)
    scan = Scan.model_validate({"pages": [PDF], "memo": {"path": str(tmp_path / "clip.wav"), "array": [0.0], "sampling_rate": 8000}})
    assert scan.memo is not None and scan.memo.path == str(tmp_path / "clip.wav") and scan.memo.media_type == "audio/wav"


def test_a_pil_image_is_encoded_as_png():
    pil = pytest.importorskip("PIL.Image")
    photo = Receipt.model_validate({"photo": pil.new("RGB", (3, 2), "white")}).photo
    assert photo.media_type == "image/png"
    assert pil.open(io.BytesIO(Path(str(photo.path)).read_bytes())).size == (3, 2)


def test_an_http_url_is_kept_as_a_url_without_a_hash():
    reference = Receipt.model_validate({"photo": "https://example.org/r/1.jpg?x=1"}).model_dump(mode="json")["photo"]
    assert reference == {"media": "image", "media_type": "image/jpeg", "sha256": None, "url": "https://example.org/r/1.jpg?x=1"}


def test_a_parquet_binary_column_is_read_as_bytes(tmp_path):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"photo": pa.array([PNG], pa.binary())}), tmp_path / "rows.parquet")
    raw = next(read_file(tmp_path / "rows.parquet"))
    assert validate(raw, raw.value, Receipt)["photo"]["sha256"] == sha(PNG)


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        (PDF, "expected an image (PNG, JPEG, GIF or WebP), got a document (application/pdf)"),
        (b"hello", "the bytes are not a media type chainette knows"),
        ("ftp://host/a.png", "is a URL chainette cannot use"),
        ("data:image/png,abc", "a data URL must be base64"),
        ("data:image/png;base64,%%%", "the data URL's base64 is not valid"),
        ({"array": [0.1]}, "holds no media: expected 'bytes' or 'path'"),
        (12, "cannot read media from int"),
    ],
)
def test_bad_media_values_say_what_is_wrong(value, problem):
    with pytest.raises(ValueError, match="photo") as caught:
        Receipt.model_validate({"photo": value})
    assert problem in str(caught.value)


def test_a_reference_validates_back_to_the_same_value():
    once = Scan.model_validate({"pages": [PDF, PDF]}).model_dump(mode="json")
    assert Scan.model_validate(once).model_dump(mode="json") == once
    assert all(is_reference(page) for page in once["pages"]) and not is_reference({"media": "image"})


def step(prompt: str, system: str | None = None) -> Step:
    return Step(id="read", input_model=Receipt, output_model=Label, engine_name="s", user_prompt=prompt, system_prompt=system)


def row_of(data: dict) -> Row:
    return Row("0", {"chain_input": data}, "chain_input")


def reference(data: bytes = PNG) -> dict:
    return Receipt.model_validate({"photo": data}).model_dump(mode="json")["photo"]


def test_the_template_places_the_image_where_it_names_it():
    photo = reference()
    messages = Prompts.of(step("Read this receipt: {{photo}} and answer.", system="Be brief.")).messages(row_of({"photo": photo}))
    assert messages[1] == {
        "role": "user",
        "content": [
            {"type": "text", "text": "Read this receipt: "},
            {"type": "media", "field": "photo", "reference": photo},
            {"type": "text", "text": " and answer."},
        ],
    }
    assert messages[0]["role"] == "system" and isinstance(messages[0]["content"], str)
    assert content_text(messages[1]["content"]) == f"Read this receipt: [image photo: {photo['path']}] and answer."


def test_a_list_places_each_item_in_order_and_a_loop_places_them_between_text():
    pages = Scan.model_validate({"pages": [PDF, PDF + b"2"]}).model_dump(mode="json")["pages"]
    scan = Step(id="s", input_model=Scan, output_model=Label, engine_name="s", user_prompt="{{pages}}")
    assert [part["reference"] for part in Prompts.of(scan).messages(row_of({"pages": pages}))[-1]["content"]] == pages
    looped = Step(id="s", input_model=Scan, output_model=Label, engine_name="s", user_prompt="{% for p in pages %}Page:{{p}}{% endfor %}")
    content = Prompts.of(looped).messages(row_of({"pages": pages}))[-1]["content"]
    assert [part.get("text") or part["field"] for part in content] == ["Page:", "pages[0]", "Page:", "pages[1]"]


def test_media_through_the_chain_input_path_are_placed_too():
    photo = reference()
    content = Prompts.of(step("{{chain_input.photo}}")).messages(row_of({"photo": photo}))[-1]["content"]
    assert content == [{"type": "media", "field": "chain_input.photo", "reference": photo}]


def test_a_prompt_without_media_renders_the_same_string_as_before():
    messages = Prompts.of(step("Note: {{note}}")).messages(row_of({"photo": reference(), "note": "hi"}))
    assert messages[-1] == {"role": "user", "content": "Note: hi"}


def test_media_named_in_the_system_prompt_is_a_row_error():
    with pytest.raises(RowError, match="media can be placed in the user_prompt only"):
        Prompts.of(step("Read it.", system="{{photo}}")).messages(row_of({"photo": reference()}))


def test_a_rows_text_that_looks_like_a_mark_stays_text():
    messages = Prompts.of(step("{{note}} {{photo}}")).messages(row_of({"photo": reference(), "note": "\x00media0-0\x00"}))
    assert messages[-1]["content"][0] == {"type": "text", "text": "\x00media0-0\x00 "}


def keys() -> RequestKeys:
    return RequestKeys({"backend": "b"}, {}, "S", {}, per_row=False)


def message(photo: dict) -> list[dict]:
    return [{"role": "user", "content": [{"type": "text", "text": "Read:"}, {"type": "media", "field": "photo", "reference": photo}]}]


def test_the_cache_key_hashes_the_image_not_its_path_or_the_text(tmp_path):
    (tmp_path / "copy.png").write_bytes(PNG)
    same = Receipt.model_validate({"photo": tmp_path / "copy.png"}).model_dump(mode="json")["photo"]
    other = reference(PNG + b"\x00")
    assert keys().key(message(reference()), 0, "r") == keys().key(message(same), 0, "r")
    assert keys().key(message(reference()), 0, "r") != keys().key(message(other), 0, "r")
    assert keys().key([{"role": "user", "content": "Read:"}], 0, "r") == RequestKeys({"backend": "b"}, {}, "S", {}, False).key(
        [{"role": "user", "content": "Read:"}], 0, "r"
    )


def test_reading_a_changed_file_is_a_row_error_naming_the_field(tmp_path):
    (tmp_path / "a.png").write_bytes(PNG)
    photo = Receipt.model_validate({"photo": tmp_path / "a.png"}).model_dump(mode="json")["photo"]
    assert read_bytes(photo, field="photo") == PNG
    (tmp_path / "a.png").write_bytes(PNG + b"edited")
    with pytest.raises(RowError, match=r"field 'photo': .*a.png changed since the row was read"):
        read_bytes(photo, field="photo")


def test_outputs_and_flattened_hold_the_reference_and_requests_carry_the_image(scripted, tmp_path):
    backend = scripted(lambda request, attempt: json.dumps({"label": request.messages[-1]["content"][1]["field"]}))
    register_engine("s", backend="scripted", model="m")
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "a.png").write_bytes(PNG)
    (folder / "rows.jsonl").write_text('{"photo": "a.png", "note": "x"}\n')
    result = Chain(name="c", steps=[step("Read: {{photo}}")]).run(str(folder / "rows.jsonl"), output_dir=tmp_path / "out")
    expected = {"media": "image", "media_type": "image/png", "sha256": sha(PNG), "path": str(folder / "a.png")}
    assert "media [('photo', 'image')]" in backend.events, "the start check was asked about the placed field"
    assert backend.requests[0].messages[-1]["content"][1]["reference"] == expected
    assert result.flattened[0]["chain_input.photo"] == expected
    written = (tmp_path / "out").rglob("*.jsonl")
    assert not any(base64.b64encode(PNG).decode()[:40] in path.read_text() for path in written)


def peak_memory(tmp_path: Path, size: int, sizes: list[int]) -> int:
    """The traced peak of a run over 10,000 rows, each placing its own image of `size` bytes (the backend reads each
    as it is sent, into `sizes`)."""
    images = tmp_path / "images"
    images.mkdir(parents=True)
    with open(tmp_path / "rows.jsonl", "w") as rows:
        for index in range(10_000):
            (images / f"{index}.png").write_bytes(PNG[:16] + index.to_bytes(4, "big") * (size // 4))
            rows.write(json.dumps({"photo": f"images/{index}.png"}) + "\n")
    sizes.clear()
    tracemalloc.start()
    try:
        Chain(name="c", steps=[step("{{photo}}")]).run(str(tmp_path / "rows.jsonl"), output_dir=tmp_path / "out", cache=False)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(sizes) == 10_000 and set(sizes) == {size + 16}
    return peak


def test_memory_stays_flat_over_ten_thousand_images(scripted, tmp_path):
    """Images are read when their request is built and dropped after: 10,000 images of 4 KiB (40 MB in all) raise
    the run's peak by less than a quarter of their total over 10,000 images of 4 bytes (kept, they would raise it by
    all; the margin is the run's own buffers, whose peaks vary from run to run by a few MB)."""
    sizes: list[int] = []

    def answer(request, attempt):
        sizes.append(len(read_bytes(request.messages[-1]["content"][-1]["reference"], field="photo")))
        return json.dumps({"label": "ok"})

    scripted(answer)
    register_engine("s", backend="scripted", model="m", max_concurrency=16)
    small = peak_memory(tmp_path / "small", 4, sizes)
    large = peak_memory(tmp_path / "large", 4096, sizes)
    assert large - small < 10_000 * 4096 / 4


def test_a_backend_without_the_media_hook_is_refused_at_start_naming_step_field_and_backend(tmp_path):
    get_plugins().register("texty", ScriptedBackend(lambda request, attempt: "{}"))
    register_engine("s", backend="texty", model="m")
    with pytest.raises(
        ConfigError, match=r"Step 'read': field 'photo' is media, and backend 'texty' \(engine 's'\) does not say it can send media"
    ):
        Chain(name="c", steps=[step("Read: {{photo}}")]).run([{"photo": PNG}], output_dir=tmp_path / "out")


def test_a_step_that_does_not_place_media_needs_no_media_hook(tmp_path):
    get_plugins().register("texty", ScriptedBackend(lambda request, attempt: '{"label": "ok"}'))
    register_engine("s", backend="texty", model="m")
    assert len(Chain(name="c", steps=[step("Note: {{note}}")]).run([{"photo": PNG, "note": "n"}], output_dir=tmp_path / "out")["read"]) == 1


def test_a_template_reading_a_references_fields_writes_about_it_without_placing_it():
    photo = reference()
    messages = Prompts.of(step("File {{photo.path}} ({{photo.media_type}})")).messages(row_of({"photo": photo}))
    assert messages[-1] == {"role": "user", "content": f"File {photo['path']} (image/png)"}
    assert placed_media(step("{{photo.path}}"), Receipt) == {} and placed_media(step("{{photo}}"), Receipt) == {"photo": "image"}


def test_a_field_typed_with_the_base_media_type_takes_any_kind():
    class Any_(BaseModel):
        item: Media

    assert Any_.model_validate({"item": PDF}).item.kind == "document" and Any_.model_validate({"item": PNG}).item.kind == "image"


def test_rows_given_in_python_with_pil_images_resume_as_the_same_inputs():
    """A list of rows holding PIL images (or bytes) has the same fingerprint on every run: a resume is not refused as
    other inputs (their reprs hold memory addresses)."""
    PIL = pytest.importorskip("PIL.Image")
    from chainette.inputs import fingerprint

    def rows() -> list[dict]:
        return [{"photo": PIL.new("RGB", (4, 4), "white"), "raw": b"\x00\x01"}]

    assert fingerprint(rows()) == fingerprint(rows())
    assert fingerprint(rows()) != fingerprint([{"photo": PIL.new("RGB", (4, 4), "black"), "raw": b"\x00\x01"}])


def test_a_plans_sample_reads_relative_media_paths_from_its_input_files_folder(scripted, tmp_path, monkeypatch):
    from chainette.plan import make_plan

    backend = scripted(lambda request, attempt: json.dumps({"label": "paid", "score": 1.0}))
    register_engine("s", backend="scripted", model="m")
    data = tmp_path / "data"
    data.mkdir()
    (data / "receipt.png").write_bytes(PNG)
    (data / "inputs.jsonl").write_text(json.dumps({"photo": "receipt.png"}) + "\n")
    monkeypatch.chdir(tmp_path)  # not the input's folder: a relative path read from here is not found
    chain = Chain(name="c", steps=[Step(id="read", input_model=Receipt, output_model=Label, engine_name="s", user_prompt="{{photo}}")])
    plan = make_plan(chain, str(data / "inputs.jsonl"), sample=1, cache=False)
    assert plan.steps[0].requests.estimate == 1 and len(backend.requests) == 1


def test_rows_given_in_python_read_relative_media_paths_from_media_root(scripted, tmp_path):
    backend = scripted(lambda request, attempt: json.dumps({"label": "paid", "score": 1.0}))
    register_engine("s", backend="scripted", model="m")
    (tmp_path / "receipt.png").write_bytes(PNG)
    chain = Chain(name="c", steps=[Step(id="read", input_model=Receipt, output_model=Label, engine_name="s", user_prompt="{{photo}}")])
    result = chain.run([{"photo": "receipt.png"}], output_dir=tmp_path / "out", media_root=tmp_path)
    assert result.stats["steps"]["read"]["ok"] == 1 and len(backend.requests) == 1
