"""Under CI a missing chromium or PostgreSQL fails the tests that need it; elsewhere they skip."""

import pytest

import pg
import test_browser
from helpers import require_tool


@pytest.fixture
def no_tools(monkeypatch):
    """Neither chromium on the path nor PostgreSQL's binaries, and no server given by URL."""
    monkeypatch.setattr(test_browser.shutil, "which", lambda name: None)
    monkeypatch.setattr(pg, "_bin", lambda name: None)
    monkeypatch.delenv("ARENA_TEST_PG_URL", raising=False)


def missing_postgres_url():
    with pg.postgres_server() as url:
        return url


@pytest.mark.parametrize("ci", ["true", "1"])
def test_under_ci_a_missing_tool_fails(no_tools, monkeypatch, ci):
    monkeypatch.setenv("CI", ci)
    with pytest.raises(pytest.fail.Exception, match=r"CI=true: chromium is required \(scripts/test.sh installs it\)"):
        require_tool(test_browser.find_chromium(), "chromium")
    with pytest.raises(pytest.fail.Exception, match="CI=true: PostgreSQL is required"):
        require_tool(missing_postgres_url(), "PostgreSQL")


@pytest.mark.parametrize("ci", [None, "false", ""])
def test_outside_ci_a_missing_tool_skips(no_tools, monkeypatch, ci):
    if ci is None:
        monkeypatch.delenv("CI", raising=False)
    else:
        monkeypatch.setenv("CI", ci)
    with pytest.raises(pytest.skip.Exception, match="chromium is not installed"):
        require_tool(test_browser.find_chromium(), "chromium")
    with pytest.raises(pytest.skip.Exception, match="PostgreSQL is not installed"):
        require_tool(missing_postgres_url(), "PostgreSQL")


def test_a_present_tool_is_returned_under_ci_too(monkeypatch):
    monkeypatch.setenv("CI", "true")
    monkeypatch.setattr(test_browser.shutil, "which", lambda name: f"/opt/bin/{name}")
    assert require_tool(test_browser.find_chromium(), "chromium") == "/opt/bin/chromium"
