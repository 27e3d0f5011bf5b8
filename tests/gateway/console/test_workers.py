"""`tiergate serve --workers 2`: a console session made by one worker is read by every other (the signing
secret is kept in the database, made once), and so are its CSRF tokens; behind TLS its cookie is Secure."""

from __future__ import annotations

import re
import signal
import subprocess
from pathlib import Path

import httpx

from tests.processes import free_port, start, wait_http

ADMIN = "workers-admin-token-0123456789"


def test_every_worker_reads_every_session(
    processes: list[subprocess.Popen[str]], tmp_path: Path, fast_engine: str
) -> None:
    port = free_port()
    config = tmp_path / "tiergate.yaml"
    config.write_text(
        f"server: {{port: {port}, workers: 2}}\n"
        f"auth: {{mode: keys, admin_tokens: ['{ADMIN}']}}\n"
        f"database: {{url: 'sqlite:///{tmp_path / 'gateway.sqlite3'}'}}\n"
        f"pools: {{fast: {{replicas: ['{fast_engine}'], health: {{interval_s: 0.2}}}}}}\n"
        "models: {qwen3-8b: {tiers: {fast: {pool: fast}}}}\n"
    )
    gateway = start(processes, "serve", "--config", str(config))
    url = f"http://127.0.0.1:{port}"
    wait_http(f"{url}/readyz", gateway, timeout=60)

    def fresh(method: str, path: str, cookies: dict[str, str], **kwargs: object) -> httpx.Response:
        # a new connection each time: the kernel hands them to either worker
        with httpx.Client(base_url=url, cookies=cookies, timeout=30) as client:
            return client.request(method, path, **kwargs)  # type: ignore[arg-type]

    page = fresh("GET", "/console/sign-in", {})
    cookies = dict(page.cookies)
    token = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert token is not None
    signed = fresh("POST", "/console/sign-in", cookies, data={"csrf": token.group(1), "credential": ADMIN})
    assert signed.status_code == 303 and signed.headers["location"] == "/console/operator"
    cookies = dict(signed.cookies)
    for _ in range(20):
        assert fresh("GET", "/console/operator", cookies).status_code == 200
    token = re.search(r'name="csrf" value="([^"]+)"', fresh("GET", "/console/operator", cookies).text)
    assert token is not None
    for _ in range(6):  # a token one worker wrote into a form is good at the other too
        assert fresh("POST", "/console/sign-out", cookies, data={"csrf": token.group(1)}).status_code == 200
    # behind a TLS proxy on this host (uvicorn trusts 127.0.0.1's X-Forwarded-Proto), the cookie is Secure
    behind = fresh("GET", "/console/sign-in", {}, headers={"x-forwarded-proto": "https"})
    assert "secure" in {part.strip().lower() for part in behind.headers["set-cookie"].split(";")}
    gateway.send_signal(signal.SIGTERM)
    gateway.wait(timeout=15)
