"""The README's two set-up commands are the ones that work: CI runs the test command verbatim."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).parents[1]


def shell_blocks(text: str) -> list[str]:
    return [block.strip() for block in re.findall(r"```sh\n(.*?)```", text, flags=re.DOTALL)]


def test_ci_runs_the_readme_test_command() -> None:
    blocks = shell_blocks((ROOT / "README.md").read_text(encoding="utf-8"))
    install_and_run, install_and_test = blocks[0], blocks[1]
    assert install_and_run.endswith("tiergate demo")
    assert "pytest" in install_and_test and "mypy" in install_and_test and "ruff check" in install_and_test
    assert "--real-vllm" in install_and_test  # the real-engine suite runs in CI, not only by hand
    assert install_and_test in (ROOT / ".ci" / "run").read_text(encoding="utf-8").splitlines()
