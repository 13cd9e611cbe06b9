"""Pictures with the prompt: every kind of NAME in both APIs, asserted on the bytes the server received."""

from __future__ import annotations

import base64
import io
import json

import pytest

from nano_magic.images import image_tokens
from nano_magic.tokens import estimate_request
from tests.support.parts import missing

try:
    import numpy as np
    from PIL import Image as PIL
except ImportError:
    missing("Pillow and numpy (the images extra, which scripts/test installs)", module=True)


@pytest.fixture(autouse=True)
def own_cache(tmp_path, monkeypatch):
    """The image store lives beside the answer cache, in the user cache directory: here a fresh one."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    return tmp_path / "cache" / "nano_magic" / "images"


def encoded(image, kind: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=kind, **options)
    return buffer.getvalue()


def gradient(width: int, height: int, mode: str = "RGB"):
    array = np.zeros((height, width, len(mode)), dtype=np.uint8)
    array[..., 0] = np.linspace(0, 255, width, dtype=np.uint8)[None, :]
    array[..., 1] = np.linspace(0, 255, height, dtype=np.uint8)[:, None]
    return array


def sent_images(post) -> list[tuple[str, str]]:
    """(data or URL, detail) of each picture in the last user message, in either API's shape."""
    items = post.body.get("messages") or post.body["input"]
    parts = [p for p in items[-1]["content"] if p["type"] in ("image_url", "input_image")]
    if post.body.get("messages"):
        return [(p["image_url"]["url"], p["image_url"]["detail"]) for p in parts]
    return [(p["image_url"], p["detail"]) for p in parts]


def decoded(data_url: str) -> tuple[str, bytes]:
    head, data = data_url.split(",", 1)
    assert head.startswith("data:") and head.endswith(";base64")
    return head[5:-7], base64.b64decode(data)


@pytest.mark.parametrize("api", ["chat", "responses"])
def test_every_kind_of_name_goes_out_as_its_bytes(run, fake, ip, tmp_path, api) -> None:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    figure = Figure(figsize=(4, 3), dpi=50)
    figure.add_subplot().plot([1, 3, 2])
    png = encoded(PIL.fromarray(gradient(40, 30)), "PNG")
    jpeg = encoded(PIL.fromarray(gradient(64, 48)), "JPEG", quality=90)
    (tmp_path / "photo.jpg").write_bytes(jpeg)
    ip.user_ns.update(fig=figure, pil=PIL.fromarray(gradient(20, 10, "RGBA"), "RGBA"), arr=gradient(33, 22),
                      png=png, gif=encoded(PIL.fromarray(gradient(16, 8)), "GIF"), webp=encoded(PIL.fromarray(gradient(24, 12)), "WEBP"))
    url = "https://example.org/chart.png"
    cell = run(f"%%nano --api {api} --image fig,pil,arr,png,gif,webp,{tmp_path / 'photo.jpg'},{url} --image-detail high\nWhat do these show?")
    assert not cell.failed, cell.shown
    post = fake.posts()[0]
    items = post.body.get("messages") or post.body["input"]
    assert items[-1]["content"][0] == {"type": "input_text" if api == "responses" else "text", "text": "What do these show?"}
    sent = sent_images(post)
    assert [detail for _, detail in sent] == ["high"] * 8
    *pictures, (last, _) = sent
    assert last == url  # a URL is passed on as a URL
    shapes = []
    for data_url, _ in pictures:
        media_type, data = decoded(data_url)
        image = PIL.open(io.BytesIO(data))
        image.load()
        shapes.append((media_type, image.format, image.size))
    assert shapes == [
        ("image/png", "PNG", (200, 150)),  # the figure: 4 x 3 inches at 50 dpi
        ("image/png", "PNG", (20, 10)),
        ("image/png", "PNG", (33, 22)),
        ("image/png", "PNG", (40, 30)),
        ("image/gif", "GIF", (16, 8)),
        ("image/webp", "WEBP", (24, 12)),
        ("image/jpeg", "JPEG", (64, 48)),
    ]
    assert decoded(pictures[3][0])[1] == png and decoded(pictures[6][0])[1] == jpeg  # bytes and files byte for byte
    assert np.array_equal(np.asarray(PIL.open(io.BytesIO(decoded(pictures[2][0])[1]))), ip.user_ns["arr"])


def test_the_next_cell_resends_the_picture_and_the_turn_keeps_only_its_hash(run, fake, ip, own_cache, tmp_path) -> None:
    png = encoded(PIL.fromarray(gradient(40, 30)), "PNG")
    ip.user_ns["png"] = png
    run("%%nano --image png\nDescribe it.")
    run("%%nano\nAnd the colours?")
    first_user = fake.posts()[1].body["messages"][0]
    assert decoded(first_user["content"][1]["image_url"]["url"])[1] == png
    turn = ip.magics_manager.registry["NanoMagics"].chat.conversation.threads["default"].turns[0]
    import hashlib

    digest = hashlib.sha256(png).hexdigest()
    assert turn.images == [{"sha256": digest, "media_type": "image/png", "size": len(png), "width": 40, "height": 30, "detail": "auto"}]
    assert (own_cache / digest[:2] / digest).read_bytes() == png
    saved = [o.metadata for o in run("%%nano\nThird").outputs if o.metadata]
    assert "base64" not in json.dumps(saved)
    history = run("%nano history").outputs[-1].data["text/markdown"]
    assert history.count("![image](data:image/png;base64,") == 1  # a thumbnail
    run(f"%nano export {tmp_path / 'out.json'}")
    exported = json.loads((tmp_path / "out.json").read_text())
    assert exported["threads"][0]["turns"][0]["images"][0]["sha256"] == digest and "base64" not in json.dumps(exported)

    (own_cache / digest[:2] / digest).unlink()  # another machine: the store does not have the bytes
    run("%%nano\nFourth")
    content = fake.posts()[-1].body["messages"][0]["content"]
    assert content == [{"type": "text", "text": "Describe it."}, {"type": "text", "text": "[image not available]"}]
    history = run("%nano history").outputs[-1].data["text/markdown"]
    assert "base64" not in history and f"sha256 {digest[:12]}" in history


def test_a_large_picture_is_downscaled_on_its_longest_side(run, fake, ip) -> None:
    ip.user_ns["big"] = gradient(3000, 1000)
    run("%%nano --image big\nWhat is this?")
    media_type, data = decoded(sent_images(fake.posts()[0])[0][0])
    assert media_type == "image/png" and PIL.open(io.BytesIO(data)).size == (2048, 683)


def test_what_is_not_a_picture_gets_one_line_and_nothing_is_sent(run, fake, ip, tmp_path) -> None:
    (tmp_path / "notes.txt").write_text("hello")
    ip.user_ns["floats"] = np.zeros((4, 4, 3))
    for line, expected in [
        (f"--image {tmp_path / 'notes.txt'}", "this is not a PNG, JPEG, GIF or WebP image."),
        (f"--image {tmp_path / 'gone.png'}", "there is no variable or file named"),
        ("--image floats", "must have the shape (H, W, 3) or (H, W, 4) and dtype uint8, not (4, 4, 3) float64."),
        ("--image _", "no figure has been shown in this kernel yet."),
    ]:
        cell = run(f"%%nano {line}\nWhat is it?")
        assert cell.failed and expected in cell.shown and "Traceback" not in cell.shown
        assert len([x for x in cell.shown.strip().splitlines() if x.strip()]) == 1
    assert fake.posts() == []


def test_dry_run_shortens_each_data_url(run, fake, ip) -> None:
    png = encoded(PIL.fromarray(gradient(40, 30)), "PNG")
    ip.user_ns["png"] = png
    shown = run("%%nano --dry-run --image png\nHi").stdout
    url = "data:image/png;base64," + base64.b64encode(png).decode()
    assert f'"url": "{url[:40]}… ({len(png):,} bytes)"' in shown and url not in shown
    assert fake.posts() == []


def test_the_chat_api_takes_pictures(fake, tmp_path) -> None:
    from nano_magic import Chat

    jpeg = encoded(PIL.fromarray(gradient(64, 48)), "JPEG")
    (tmp_path / "a.jpg").write_bytes(jpeg)
    chat = Chat(base_url=fake.base_url, api="responses")
    chat.ask("Look", images=[str(tmp_path / "a.jpg")])
    assert decoded(sent_images(fake.posts()[0])[0][0]) == ("image/jpeg", jpeg)
    with pytest.raises(ValueError, match="is not a figure"):
        chat.ask("Look", images=[object()])
    assert len(fake.posts()) == 1
    chat.close()


def test_image_tokens_follow_openais_documented_examples() -> None:
    # Patch models: 1024 x 1024 is 1024 patches; 1800 x 2400 is scaled to 1056 x 1408, 1452 patches; times the multiplier.
    assert image_tokens(1024, 1024, "gpt-4.1-mini") == 1659  # ceil(1024 * 1.62)
    assert image_tokens(1800, 2400, "gpt-4.1-nano") == 3572  # ceil(1452 * 2.46)
    # Tile models: 1024 x 1024 high is 4 tiles, 2048 x 4096 is 6 tiles; low is the base alone.
    assert image_tokens(1024, 1024, "gpt-4o", "high") == 85 + 170 * 4
    assert image_tokens(2048, 4096, "gpt-4o", "high") == 85 + 170 * 6
    assert image_tokens(4096, 8192, "gpt-4o", "low") == 85
    assert image_tokens(64, 64, "fake-model") is None


def test_the_estimate_counts_pictures_by_size_not_by_base64(run, fake, ip) -> None:
    png = encoded(PIL.fromarray(gradient(64, 64)), "PNG")
    part = {"type": "image_url", "image_url": {"url": "data:image/png;base64," + base64.b64encode(png).decode(), "detail": "auto"}}
    body = {"messages": [{"role": "user", "content": [{"type": "text", "text": "Hi"}, part]}]}
    with_picture, text_only = estimate_request(body, "gpt-4.1-nano", 10), estimate_request({"messages": [{"role": "user", "content": [{"type": "text", "text": "Hi"}]}]}, "gpt-4.1-nano", 10)
    assert with_picture.input_tokens - text_only.input_tokens == 10  # 4 patches x 2.46
    unknown = estimate_request(body, "fake-model", 10)
    assert unknown.unknown_images == 1 and "1 pictures whose tokens are unknown" in unknown.describe()


@pytest.mark.server
def test_the_real_server_takes_a_picture_and_a_reasoning_effort_in_both_turns(ip, run, llama_server, monkeypatch) -> None:
    """llama.cpp's server (llama-cpp-python) has no vision projector for the tiny model, yet it must take the request
    shapes: image_url parts in this turn and, resent, in the next, and reasoning_effort, which it ignores."""
    base_url, model = llama_server
    monkeypatch.setenv("NANO_BASE_URL", base_url)
    monkeypatch.setenv("NANO_MODEL", model)
    ip.user_ns["png"] = encoded(PIL.fromarray(gradient(16, 16)), "PNG")
    first = run("%%nano --max-tokens 4 --image png --reasoning-effort low\nWhat is this?")
    second = run("%%nano --max-tokens 4\nAnd now?")
    assert not first.failed and not second.failed, first.shown + second.shown
    turns = ip.magics_manager.registry["NanoMagics"].chat.conversation.threads["default"].turns
    assert [len(t.images) for t in turns] == [1, 0] and all(t.answer for t in turns)


def test_map_takes_an_image_column(run, fake, ip, tmp_path) -> None:
    import pandas as pd

    paths = []
    for index, width in enumerate((10, 20)):
        (tmp_path / f"{index}.png").write_bytes(encoded(PIL.fromarray(gradient(width, 5)), "PNG"))
        paths.append(str(tmp_path / f"{index}.png"))
    ip.user_ns["df"] = pd.DataFrame({"name": ["a", "b"], "plot": [paths[0], PIL.fromarray(gradient(20, 5))]})
    cell = run("%%nano --map df --no-cache --out said --image-detail low\nDescribe {name}: {image:plot}")
    assert not cell.failed, cell.shown
    bodies = sorted((p.body for p in fake.posts()), key=lambda b: b["messages"][0]["content"][0]["text"])
    assert [b["messages"][0]["content"][0]["text"] for b in bodies] == ["Describe a:", "Describe b:"]
    sizes = [PIL.open(io.BytesIO(decoded(b["messages"][0]["content"][1]["image_url"]["url"])[1])).size for b in bodies]
    assert sizes == [(10, 5), (20, 5)] and {b["messages"][0]["content"][1]["image_url"]["detail"] for b in bodies} == {"low"}
    bad = run("%%nano --map df --no-cache\nDescribe {image:photo}")
    assert bad.failed and "{image:photo}, which the data does not have" in bad.shown and len(fake.posts()) == 2
    ip.user_ns["df"] = pd.DataFrame({"plot": [str(tmp_path / "missing.png")]})
    gone = run("%%nano --map df --no-cache\nDescribe {image:plot}")
    assert gone.failed and "{image:plot} of item 0" in gone.shown and len(fake.posts()) == 2


def test_replay_matches_a_picture_by_its_hash(run, fake, ip, tmp_path) -> None:
    ip.user_ns["png"] = encoded(PIL.fromarray(gradient(40, 30)), "PNG")
    run("%%nano --image png\nDescribe it.")
    run(f"%nano export {tmp_path / 'lesson.json'}")
    run("%nano reset")
    run(f"%nano replay {tmp_path / 'lesson.json'} --offline --speed 0")
    replayed = run("%%nano --image png\nDescribe it.")
    assert not replayed.failed and "replayed" in replayed.shown and len(fake.posts()) == 1
    run("%nano reset")
    ip.user_ns["png"] = encoded(PIL.fromarray(gradient(41, 30)), "PNG")
    other = run("%%nano --image png\nDescribe it.")
    assert other.failed and "no saved answer matches this cell" in other.shown and len(fake.posts()) == 1
