"""The guide's pages, by their path in the repository, for `%nano help`."""

from __future__ import annotations

__all__ = ["GUIDE"]

GUIDE = (
    ("docs/getting-started.md", "install, backends, models and prices, the Python API"),
    ("docs/conversations.md", "threads, re-runs, subcommands, what is saved"),
    ("docs/options.md", "every option and setting"),
    ("docs/tools-and-schemas.md", "--tools and --schema"),
    ("docs/pictures.md", "--image"),
    ("docs/many-rows.md", "--map over a DataFrame"),
    ("docs/teaching.md", "replay, budget, exams, explain"),
    ("docs/untrusted-output.md", "what is guaranteed about model output"),
    ("docs/performance.md", "measured figures"),
    ("docs/troubleshooting.md", "every message, and what to do"),
)
