"""The streaming client: every dialect, every chunk boundary, one answer."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from nano_magic.client import Client
from nano_magic.config import Backend, resolve_backend
from nano_magic.errors import NanoError, StreamError
from nano_magic.usage import Usage
from nano_magic.wire import Delta, Finish, Options, Retry, UsageReport, build_request

FIXTURES = Path(__file__).parent / "fixtures"
LOCAL = Backend("OpenAI-compatible server", "http://test/v1", "m")


def read_capture(name: str) -> tuple[dict[str, str], bytes]:
    """A captured HTTP response: its headers and its body."""
    raw = (FIXTURES / name).read_bytes()
    if not raw.startswith(b"HTTP/"):
        return {"content-type": "text/event-stream"}, raw  # a tail-only capture
    head, _, body = raw.partition(b"\r\n\r\n")
    headers = dict(line.split(": ", 1) for line in head.decode().split("\r\n")[1:])
    headers.pop("Transfer-Encoding", None)
    return headers, body


def collect(body: bytes, pieces: list[bytes] | None = None, api: str = "chat", headers: dict | None = None):
    """Stream `body` (cut into `pieces`) through the client; return text, usage, finish and events."""
    headers = headers or {"content-type": "text/event-stream"}
    chunks = pieces if pieces is not None else [body]
    transport = httpx.MockTransport(lambda request: httpx.Response(200, headers=headers, content=iter(chunks)))
    client = Client(LOCAL, transport=transport, max_retries=0)
    request = build_request(LOCAL, "m", None, [{"role": "user", "content": "hi"}], Options(api=api))
    events = list(client.stream(request))
    text = "".join(e.text for e in events if isinstance(e, Delta))
    usage = [e.usage for e in events if isinstance(e, UsageReport)]
    finish = [e.reason for e in events if isinstance(e, Finish)]
    return text, usage, finish


def every_split(body: bytes):
    """The body cut in two at every byte offset."""
    for k in range(len(body) + 1):
        yield [body[:k], body[k:]]


EXPECTED = {
    "transformers-serve-chat.txt": ("\x1b\ufffd\ufffd@ 🙂2", Usage(21, 8), "length"),
    "llama-server-chat.txt": (None, Usage(21, 4, 0), "length"),
    "llama-cpp-python-chat.txt": (None, None, None),
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_real_captures_give_the_same_answer_at_every_split(name: str) -> None:
    headers, body = read_capture(name)
    whole = collect(body, headers=headers)
    text, usage, finish = EXPECTED[name]
    if text is not None:
        assert whole[0] == text
    assert whole[1] == ([usage] if usage else [])
    if finish:
        assert whole[2] == [finish]
    assert whole[0], "the capture carries answer text"
    for pieces in every_split(body):
        assert collect(body, pieces, headers=headers) == whole
    assert collect(body, [body[i : i + 1] for i in range(len(body))], headers=headers) == whole


def chat_frame(payload: dict, newline: str = "\n") -> str:
    return f"data: {json.dumps(payload)}{newline}{newline}"


def cloudflare_stream(newline: str = "\n") -> bytes:
    """A Cloudflare /ai/v1 shaped stream: obfuscation padding, a usage chunk with no choices, [DONE]."""
    base = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "model": "gpt-4.1-nano-2025-04-14", "usage": None}
    frames: list[dict] = [
        {**base, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}], "obfuscation": "x1"},
        {**base, "choices": [{"index": 0, "delta": {"content": "Line\u2028sep "}, "finish_reason": None}], "obfuscation": "abc"},
        {**base, "choices": [{"index": 0, "delta": {"content": "and $E=mc^2$ é漢🙂"}, "finish_reason": None}], "obfuscation": "q"},
        {**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}], "obfuscation": "zz"},
        {**base, "choices": [], "usage": {"prompt_tokens": 12, "completion_tokens": 7, "total_tokens": 19,
                                         "prompt_tokens_details": {"cached_tokens": 4}}, "gatewayMetadata": {"x": 1}},
    ]
    text = ": keep-alive" + newline + newline + "".join(chat_frame(f, newline) for f in frames) + f"data: [DONE]{newline}{newline}"
    return text.encode()


@pytest.mark.parametrize("newline", ["\n", "\r\n", "\r"], ids=["LF", "CRLF", "CR"])
def test_cloudflare_stream_at_every_split(newline: str) -> None:
    body = cloudflare_stream(newline)
    expected = ("Line\u2028sep and $E=mc^2$ é漢🙂", [Usage(12, 7, 4)], ["stop"])
    assert collect(body) == expected
    for pieces in every_split(body):
        assert collect(body, pieces) == expected


def responses_stream() -> bytes:
    """A Responses API stream: typed events and usage on response.completed."""
    events = [
        ("response.created", {"type": "response.created", "response": {"id": "r", "status": "in_progress"}}),
        ("response.output_text.delta", {"type": "response.output_text.delta", "delta": "Hello "}),
        ("response.output_text.delta", {"type": "response.output_text.delta", "delta": "wörld\u2028!"}),
        ("response.output_text.done", {"type": "response.output_text.done", "text": "Hello wörld\u2028!"}),
        ("response.completed", {"type": "response.completed", "response": {"status": "completed", "usage": {
            "input_tokens": 9, "output_tokens": 3, "input_tokens_details": {"cached_tokens": 0}}}}),
    ]
    return "".join(f"event: {name}\ndata: {json.dumps(data)}\n\n" for name, data in events).encode()


def test_responses_stream_at_every_split() -> None:
    body = responses_stream()
    expected = ("Hello wörld\u2028!", [Usage(9, 3, 0)], ["stop"])
    assert collect(body, api="responses") == expected
    for pieces in every_split(body):
        assert collect(body, pieces, api="responses") == expected


def test_multi_line_data_is_joined_with_newlines() -> None:
    payload = json.dumps({"choices": [{"index": 0, "delta": {"content": "a"}, "finish_reason": "stop"}]}, indent=1)
    body = ("".join(f"data: {line}\n" for line in payload.split("\n")) + "\ndata: [DONE]\n\n").encode()
    assert collect(body) == ("a", [], ["stop"])


@pytest.mark.parametrize("body", [
    b'data: {"choices":[{"index":0,"delta":{"content":"half"},"finish_reason":null}]}\n\n',
    b'data: {"choices":[{"index":0,"delta":{"content":"half"},"finish_reason":null}]}\n\ndata: {"choi',
])
def test_a_stream_without_finish_or_done_is_cut(body: bytes) -> None:
    with pytest.raises(StreamError, match="ended before"):
        collect(body)


def test_error_payload_mid_stream_is_reported() -> None:
    body = b'data: {"choices":[{"index":0,"delta":{"content":"par"}}]}\n\ndata: {"error": {"message": "boom"}}\n\n'
    with pytest.raises(StreamError, match="boom"):
        collect(body)


def test_cloudflare_dry_run_request_masks_the_token() -> None:
    env = {"CLOUDFLARE_ACCOUNT_ID": "acc123", "CLOUDFLARE_API_TOKEN": "cf-secret-token-0123456789"}
    backend = resolve_backend({}, env)
    request = build_request(backend, backend.model or "", None, [{"role": "user", "content": "hi"}], Options())
    text = request.describe()
    assert "POST https://api.cloudflare.com/client/v4/accounts/acc123/ai/v1/chat/completions" in text
    assert '"model": "openai/gpt-4.1-nano"' in text
    assert "cf-secret-token-0123456789" not in text
    assert "Authorization: Bearer …6789" in text
    assert "max_tokens" not in request.body


def test_options_land_in_the_fields_of_each_api() -> None:
    options = Options(temperature=0.2, top_p=0.9, max_tokens=50, seed=7, stop="END", json=True)
    messages = [{"role": "user", "content": "hi"}]
    chat = build_request(LOCAL, "m", "Be brief.", messages, options).body
    assert chat["messages"][0] == {"role": "system", "content": "Be brief.\n\nAnswer with a single JSON object."}
    assert (chat["temperature"], chat["top_p"], chat["max_completion_tokens"], chat["max_tokens"], chat["seed"], chat["stop"]) == (0.2, 0.9, 50, 50, 7, "END")
    assert chat["response_format"] == {"type": "json_object"} and chat["stream_options"] == {"include_usage": True}
    responses = build_request(LOCAL, "m", "Be brief.", messages, Options(**{**options.__dict__, "api": "responses", "seed": None, "stop": None})).body
    assert responses["instructions"].startswith("Be brief.") and responses["input"] == messages
    assert (responses["max_output_tokens"], responses["store"], responses["text"]) == (50, False, {"format": {"type": "json_object"}})
    assert "previous_response_id" not in responses


def test_retry_after_is_honoured_then_the_answer_streams() -> None:
    calls: list = []
    waits: list = []
    ok = cloudflare_stream()

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        if len(calls) == 1:
            return httpx.Response(429, headers={"Retry-After": "2"}, json={"error": {"message": "slow down"}})
        if len(calls) == 2:
            return httpx.Response(503, headers={"retry-after-ms": "150"}, text="busy")
        return httpx.Response(200, headers={"content-type": "text/event-stream"}, content=ok)

    client = Client(LOCAL, transport=httpx.MockTransport(handler), max_retries=3, sleep=waits.append)
    events = list(client.stream(build_request(LOCAL, "m", None, [], Options())))
    retries = [e for e in events if isinstance(e, Retry)]
    assert [str(r) for r in retries] == ["rate limited, retrying in 2 s (1/3)", "server error 503, retrying in 0 s (2/3)"]
    assert waits == [2.0, 0.15]
    assert "".join(e.text for e in events if isinstance(e, Delta)).startswith("Line")


def test_retries_are_bounded_and_the_server_message_is_shown() -> None:
    waits: list[float] = []
    transport = httpx.MockTransport(lambda r: httpx.Response(500, json={"detail": "model crashed"}))
    client = Client(LOCAL, transport=transport, max_retries=2, sleep=waits.append)
    with pytest.raises(NanoError, match=r"server error \(500: model crashed\) \(after 3 attempts\)"):
        list(client.stream(build_request(LOCAL, "m", None, [], Options())))
    assert len(waits) == 2 and all(0 < w <= 8 for w in waits)


def test_one_connection_pool_serves_many_requests() -> None:
    seen = []
    transport = httpx.MockTransport(lambda r: seen.append(r) or httpx.Response(200, headers={"content-type": "text/event-stream"}, content=cloudflare_stream()))
    client = Client(LOCAL, transport=transport)
    for _ in range(3):
        list(client.stream(build_request(LOCAL, "m", None, [], Options())))
    assert len(seen) == 3 and client._http.is_closed is False


def test_a_finished_stream_leaves_its_connection_for_the_next_request() -> None:
    from tests.support.fake_server import FakeServer

    with FakeServer() as server:
        backend = Backend("OpenAI-compatible server", server.base_url, "m")
        client = Client(backend)
        for api in ("chat", "responses", "chat"):
            list(client.stream(build_request(backend, "m", None, [{"role": "user", "content": "hi"}], Options(api=api))))
        assert server.connections == 1
        client.close()


def test_a_server_that_does_not_stream_is_a_plain_message() -> None:
    with pytest.raises(NanoError, match=r"answered with a JSON object \(application/json\) instead of a stream of server-sent events"):
        collect(b'{"ok": true}', headers={"content-type": "application/json"})


def test_retry_after_as_an_http_date_is_the_time_until_then() -> None:
    from datetime import datetime, timedelta, timezone
    from email.utils import format_datetime

    when = format_datetime(datetime.now(timezone.utc) + timedelta(seconds=5), usegmt=True)
    replies = iter([httpx.Response(503, headers={"Retry-After": when}), httpx.Response(200, headers={"content-type": "text/event-stream"}, content=cloudflare_stream())])
    waits: list[float] = []
    client = Client(LOCAL, transport=httpx.MockTransport(lambda r: next(replies)), max_retries=1, sleep=waits.append)
    list(client.stream(build_request(LOCAL, "m", None, [], Options())))
    assert len(waits) == 1 and 3.5 < waits[0] <= 5.0


def reply_with(response: httpx.Response) -> Client:
    return Client(LOCAL, transport=httpx.MockTransport(lambda request: response), max_retries=0)


def ask(client: Client, stream: bool = True) -> list:
    return list(client.stream(build_request(LOCAL, "m", None, [{"role": "user", "content": "hi"}], Options(stream=stream))))


def test_a_redirect_names_the_target_and_suggests_it_as_the_base_url() -> None:
    client = reply_with(httpx.Response(301, headers={"Location": "https://api.example.org/v1/chat/completions"}))
    with pytest.raises(NanoError) as info:
        ask(client)
    message = str(info.value)
    assert "redirects (301) to https://api.example.org/v1/chat/completions" in message
    assert "%config NanoMagics.base_url = 'https://api.example.org/v1'" in message


@pytest.mark.parametrize("body,content_type,expected", [
    (b"<html><head><title>Log in</title></head></html>", "text/html", "an HTML page (Log in) instead of a JSON answer"),
    (b"Service moved", "text/plain", "text that is not JSON (text/plain) instead of a JSON answer"),
    (b"[1, 2]", "application/json", "JSON that is not an object instead of a JSON answer"),
    (b'{"hello": "world"}', "application/json", "a JSON object without 'choices' instead of a JSON answer"),
    (b"", "application/json", "an empty body (application/json)"),
])
def test_a_2xx_body_that_is_not_an_answer_is_a_plain_sentence(body: bytes, content_type: str, expected: str) -> None:
    client = reply_with(httpx.Response(200, headers={"content-type": content_type}, content=body))
    with pytest.raises(NanoError) as info:
        ask(client, stream=False)
    assert expected in str(info.value) and "Traceback" not in str(info.value)


def test_an_html_page_instead_of_a_stream_is_a_plain_sentence() -> None:
    client = reply_with(httpx.Response(200, headers={"content-type": "text/html"}, content=b"<title>Captive portal</title>"))
    with pytest.raises(NanoError, match=r"an HTML page \(Captive portal\) instead of a stream of server-sent events"):
        ask(client)


def test_a_negative_retry_count_still_sends_once() -> None:
    client = Client(LOCAL, transport=httpx.MockTransport(lambda r: httpx.Response(200, headers={"content-type": "text/event-stream"}, content=cloudflare_stream())), max_retries=-1)
    assert any(isinstance(e, Delta) for e in ask(client))


def test_a_read_timeout_is_not_called_unreachable() -> None:
    def slow(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("timed out", request=request)

    client = Client(LOCAL, transport=httpx.MockTransport(slow), max_retries=0, read_timeout=0.5)
    with pytest.raises(NanoError) as info:
        ask(client)
    assert "accepted the connection but sent no answer within 0.5 s (NanoMagics.read_timeout)" in str(info.value)
    assert "Could not reach" not in str(info.value)


@pytest.mark.parametrize("module", ["nano_magic.wire", "nano_magic.client", "nano_magic.render"])
def test_the_pure_modules_import_no_ipython_and_no_widgets(module: str) -> None:
    code = f"import sys, {module}; print(sorted(m for m in sys.modules if m.split('.')[0] in ('IPython', 'ipywidgets', 'ipykernel')))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"
