"""TUI fixtures: a private engine cache and the synthetic sessions."""

from __future__ import annotations

import os

import pytest

from tests.tui.synthetic import write_session
from workbench.tui.app import WorkbenchApp
from workbench.tui.jobs import Target


@pytest.fixture(scope="package", autouse=True)
def tui_cache(tmp_path_factory):
    """Tiny checkpoints and engines made by these tests go to a temporary cache."""
    old = os.environ.get("WB_CACHE")
    os.environ["WB_CACHE"] = str(tmp_path_factory.mktemp("wb-cache"))
    yield
    if old is None:
        os.environ.pop("WB_CACHE", None)
    else:
        os.environ["WB_CACHE"] = old


@pytest.fixture(scope="session")
def session_file(tmp_path_factory):
    """The synthetic session with tensors and timings (treat as read-only)."""
    return write_session(tmp_path_factory.mktemp("sessions") / "synthetic.wbs")


@pytest.fixture(scope="session")
def bare_session_file(tmp_path_factory):
    """The synthetic session without tensors and without timings."""
    return write_session(tmp_path_factory.mktemp("bare") / "bare.wbs", tensors=False, profile=False)


@pytest.fixture
def session_app(session_file):
    return WorkbenchApp(Target(session=session_file))


@pytest.fixture
def anyio_backend():
    """Pilot tests are async: anyio's pytest plugin runs them on asyncio."""
    return "asyncio"
