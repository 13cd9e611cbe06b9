"""Row 7: time to the first answer byte of a follow-up `Chat.ask`, on a kept-alive connection.

Against the loopback `FakeServer`, one `Chat` asks 21 one-shot questions (the first opens the
connection and is left out); its time to first byte is from calling `ask` to the first delta
reaching the callback. The baseline makes a new `Chat` (so a new client and connection) for
each of 20 questions. The server's connection count shows whether the connection was reused.
These are wall times on loopback, so they are small and noisy: medians of 20.

    python -m benchmarks.reuse
"""

from __future__ import annotations

import time

from benchmarks.table import Row, emit, median, ms
from nano_magic import Chat
from tests.support.fake_server import FakeServer

REQUESTS = 20


def first_byte(chat: Chat) -> float:
    """Seconds from `ask` to the first delta."""
    started = time.perf_counter()
    seen: list[float] = []

    def on_delta(text: str) -> None:
        if not seen:
            seen.append(time.perf_counter() - started)

    chat.ask("Say hello.", on_delta, once=True)
    return seen[0]


def measure() -> list[Row]:
    """Median time to first byte, reused connection against a new one per request."""
    with FakeServer() as fake:
        fake.reply = "Hello from the fake server, twice over."
        chat = Chat(model="fake-model", base_url=fake.base_url, env={})
        first_byte(chat)
        reused = [first_byte(chat) for _ in range(REQUESTS)]
        chat.close()
        reused_connections = fake.connections
        fake.reset()
        fresh = []
        for _ in range(REQUESTS):
            chat = Chat(model="fake-model", base_url=fake.base_url, env={})
            fresh.append(first_byte(chat))
            chat.close()
        fresh_connections = fake.connections
    ours, baseline = median(reused), median(fresh)
    return [Row(
        f"7. time to first byte of a follow-up Chat.ask, loopback, median of {REQUESTS}",
        f"{ms(ours)}, {connections(reused_connections)}", f"new Chat each: {ms(baseline)}, {connections(fresh_connections)}",
        f"{ours / baseline:.2f}", "reused: 1 connection, faster", reused_connections == 1 and ours < baseline,
    )]


def connections(count: int) -> str:
    """`1 connection`, `21 connections`."""
    return f"{count} connection{'' if count == 1 else 's'}"


if __name__ == "__main__":
    emit(measure())
