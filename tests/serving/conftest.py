"""Shared fixtures for the serving tests (helpers live in serving_fixtures.py)."""

from __future__ import annotations

import pytest
from serving_fixtures import ToyRun, make_toy_run


@pytest.fixture(scope="session")
def toy_run(tmp_path_factory: pytest.TempPathFactory) -> ToyRun:
    return make_toy_run(tmp_path_factory.mktemp("serving") / "run")
