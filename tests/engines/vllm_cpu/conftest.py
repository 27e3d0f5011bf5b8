"""Which python runs vLLM for this folder's tests.

`TIERGATE_VLLM_PYTHON` names one that has vLLM. Otherwise `pytest --real-vllm` installs vLLM into the cached
venv of venv.py (once; about 3 minutes) and uses that. With neither, the tests are skipped, loudly.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.engines.vllm_cpu import venv
from tests.engines.vllm_cpu.engines import make_model

PYTHON_ENV = "TIERGATE_VLLM_PYTHON"


@pytest.fixture(scope="session")
def vllm_python(pytestconfig: pytest.Config) -> str:
    chosen = os.environ.get(PYTHON_ENV)
    if chosen:
        if not Path(chosen).exists():
            pytest.fail(f"{PYTHON_ENV}={chosen}: no such file")
        return chosen
    if not pytestconfig.getoption("real_vllm"):
        pytest.skip(
            "REAL vLLM TESTS SKIPPED: run pytest with --real-vllm (it installs vLLM into a cached venv the"
            f" first time, about 3 minutes) or set {PYTHON_ENV} to a python that has vLLM"
            " (tests/engines/vllm_cpu/README.md)."
        )
    try:
        return str(venv.ensure())
    except (RuntimeError, OSError) as failure:
        pytest.fail(f"installing vLLM for the real-engine tests failed: {failure}")


@pytest.fixture(scope="session")
def smollm2_model(vllm_python: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """SmolLM2-135M-Instruct as a directory vLLM loads (make_smollm2_model.py, about 20 s), made once for
    every module that serves it."""
    return make_model(vllm_python, "make_smollm2_model.py", tmp_path_factory.mktemp("weights") / "smollm2")
