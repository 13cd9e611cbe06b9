"""A test part that is missing skips the test on a developer's machine, and fails the run under CI=true."""

from __future__ import annotations

import os
from typing import NoReturn

import pytest


def missing(reason: str, *, module: bool = False) -> NoReturn:
    """Skip for `reason`, or fail under CI=true, where scripts/test must have installed every part."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason} (CI=true: nothing may be skipped)", pytrace=False)
    pytest.skip(reason, allow_module_level=module)
