"""The app as its process's one server (`create_app(..., server_process=True)`, what `tiergate serve` runs):
tuned once started. In a process of its own: what it changes is the whole interpreter's."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

SCRIPT = """
import gc, json, sys
from starlette.testclient import TestClient
from gateway import create_app, load_settings

state = sys.argv[1]
settings = load_settings(
    None,
    database={"url": f"sqlite:///{state}/tiergate.sqlite3"},
    ledger={"journal_dir": f"{state}/journal"},
    auth={"mode": "disabled"},
    pools={"fast": {"replicas": ["http://127.0.0.1:9"]}},
    models={"m": {"tiers": {"fast": {"pool": "fast"}}}},
)
seen = {"before": [gc.get_freeze_count(), sys.getswitchinterval()]}
with TestClient(create_app(settings, server_process=sys.argv[2] == "server")) as client:
    seen["status"] = client.get("/healthz").status_code
    seen["started"] = [gc.get_freeze_count(), sys.getswitchinterval()]
print(json.dumps(seen))
"""


def started(tmp_path: Path, kind: str) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(tmp_path), kind], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    seen: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return seen


def test_a_server_process_freezes_its_heap_and_hands_the_interpreter_lock_over_sooner(tmp_path: Path) -> None:
    server = started(tmp_path, "server")
    assert server["status"] == 200
    assert server["before"] == [0, 0.005]
    frozen, interval = server["started"]
    assert frozen > 10_000 and interval == 0.001  # gateway.app.SWITCH_INTERVAL_S


def test_an_app_among_others_leaves_the_interpreter_as_it_was(tmp_path: Path) -> None:
    assert started(tmp_path, "one of many")["started"] == [0, 0.005]
