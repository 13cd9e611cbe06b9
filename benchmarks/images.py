"""Row 13: what a picture costs before it is sent, and what the estimate counts for it.

Three figures, medians of repeats in CPU time:
- a matplotlib figure (6.4 x 4.8 in at 100 dpi) made into a picture, against `savefig` to PNG alone (the
  difference is the check and the hash);
- a 4000 x 3000 JPEG downscaled to 2048 on its longest side, against decoding it alone;
- the estimate of a request with one 1024 x 1024 PNG on GPT-4.1 nano, against counting its base64 as text:
  the tokens OpenAI bills (1024 patches x 2.46) versus what a text count would have charged the budget.

    python -m benchmarks.images
"""

from __future__ import annotations

import io
import time
from typing import Callable

from benchmarks.table import Row, emit, median, ms
from nano_magic.images import picture_from, user_message
from nano_magic.tokens import count_tokens, estimate_request

REPEATS = 7


def cpu_of(work: Callable[[], object]) -> float:
    """Median CPU seconds of `work` over REPEATS runs."""
    times = []
    for _ in range(REPEATS):
        started = time.process_time()
        work()
        times.append(time.process_time() - started)
    return median(times)


def measure() -> list[Row]:
    """The three rows."""
    import matplotlib

    matplotlib.use("Agg")
    import numpy as np
    from matplotlib.figure import Figure
    from PIL import Image

    figure = Figure(figsize=(6.4, 4.8), dpi=100)
    axes = figure.add_subplot()
    axes.plot(np.linspace(0, 10, 500), np.sin(np.linspace(0, 10, 500)))
    ours = cpu_of(lambda: picture_from(figure, "fig"))
    baseline = cpu_of(lambda: figure.savefig(io.BytesIO(), format="png"))
    rows = [Row("13a. a figure as a picture (640 x 480 PNG)", ms(ours), f"savefig alone: {ms(baseline)}",
                f"{ours / baseline:.2f}", "< 1.5 x savefig", ours < 1.5 * baseline)]

    noise = np.random.default_rng(0).integers(0, 255, (3000, 4000, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(noise).save(buffer, format="JPEG", quality=85)
    jpeg = buffer.getvalue()
    ours = cpu_of(lambda: picture_from(jpeg, "photo"))
    baseline = cpu_of(lambda: Image.open(io.BytesIO(jpeg)).load())
    rows.append(Row("13b. a 4000 x 3000 JPEG downscaled to 2048 x 1536", ms(ours), f"decoding alone: {ms(baseline)}",
                    f"{ours / baseline:.2f}", "< 1 s", ours < 1.0))

    buffer = io.BytesIO()
    Image.fromarray(noise[:1024, :1024]).save(buffer, format="PNG")
    picture = picture_from(buffer.getvalue(), "square")
    body = {"messages": [user_message("What is this?", [picture], "chat")]}
    estimate = estimate_request(body, "gpt-4.1-nano", 0)
    as_text = count_tokens(picture.source())
    started = time.process_time()
    estimate_request(body, "gpt-4.1-nano", 0)
    took = time.process_time() - started
    rows.append(Row("13c. estimate of a 1024 x 1024 PNG on gpt-4.1-nano", f"{estimate.input_tokens:,} tokens in {ms(took)}",
                    f"its base64 as text: {as_text:,} tokens", f"{estimate.input_tokens / as_text:.4f}",
                    "the documented 2,520 (+ text)", 2520 <= estimate.input_tokens < 2540))
    return rows


if __name__ == "__main__":
    emit(measure())
