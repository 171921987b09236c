"""Tests never see (or write to) the user's torch hub folder; the random weight files are
shared fixtures of tests/conftest.py."""
import pytest


@pytest.fixture(autouse=True)
def _no_user_torch_home(tmp_path, monkeypatch):
    """Tests never see (or write to) the user's torch hub folder."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
