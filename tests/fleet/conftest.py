"""The real peers' executables (skip when absent)."""

from __future__ import annotations

import shutil

import pytest


@pytest.fixture
def mbpoll() -> str:
    path = shutil.which("mbpoll")
    if path is None:
        pytest.skip("mbpoll is not installed (apt-get install mbpoll; .ci/run installs it)")
    return path


@pytest.fixture
def socat() -> str:
    path = shutil.which("socat")
    if path is None:
        pytest.skip("socat is not installed (apt-get install socat)")
    return path
