"""The dependency audit `make test` runs (.ci/audit_dependencies.py): it fails on a known
vulnerability, passes a clean audit, and never passes off dependencies it could not audit as clean.

pip-audit runs for real; the vulnerability service is a local OSV-compatible server (the third
party), answering per package what each case needs.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / ".ci" / "audit_dependencies.py"
VULNERABILITY = {
    "id": "GHSA-0000-test-0001",
    "summary": "A test vulnerability",
    "affected": [
        {
            "package": {"name": "jinja2", "ecosystem": "PyPI"},
            "ranges": [{"type": "ECOSYSTEM", "events": [{"introduced": "0"}, {"fixed": "9.9.9"}]}],
        }
    ],
}


@contextlib.contextmanager
def osv(answers: dict[str, tuple[int, dict]]) -> Iterator[str]:
    """An OSV query endpoint: `answers[package]` as (status, body); no known vulnerability otherwise."""

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 (the standard library's name)
            query = json.loads(self.rfile.read(int(self.headers["content-length"])))
            status, body = answers.get(query["package"]["name"], (200, {}))
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/v1/query"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def requirements(tmp_path: Path) -> Path:
    path = tmp_path / "requirements.txt"
    path.write_text("jinja2==3.1.6\norjson==3.13.0\n")
    return path


def audit(requirements: Path, osv_url: str, **env: str) -> subprocess.CompletedProcess[str]:
    inherited = {k: v for k, v in os.environ.items() if k != "AUDIT_STRICT"}
    environment = {**inherited, "AUDIT_OSV_URL": osv_url, **env}
    return subprocess.run(
        [sys.executable, str(SCRIPT), str(requirements)], env=environment, capture_output=True, text=True, timeout=120
    )


def test_a_known_vulnerability_fails_the_audit(requirements):
    with osv({"jinja2": (200, {"vulns": [VULNERABILITY]})}) as url:
        run = audit(requirements, url)
    assert run.returncode == 1, run.stderr
    assert "2 pinned, 2 audited, 1 with known vulnerabilities, 0 could not be audited" in run.stdout
    assert "VULNERABLE jinja2 3.1.6: GHSA-0000-test-0001 (fixed in 9.9.9)" in run.stdout


def test_a_clean_audit_passes(requirements):
    with osv({}) as url:
        run = audit(requirements, url, AUDIT_STRICT="1")
    assert run.returncode == 0, run.stderr
    assert "2 pinned, 2 audited, 0 with known vulnerabilities, 0 could not be audited" in run.stdout
    assert "WARNING" not in run.stderr


def test_an_unreachable_service_is_a_warning_not_a_clean_audit_and_strict_fails(requirements):
    with osv({"orjson": (503, {"error": "unavailable"})}) as url:
        lenient = audit(requirements, url)
        strict = audit(requirements, url, AUDIT_STRICT="1")
    assert lenient.returncode == 0, lenient.stderr
    assert "0 audited, 0 with known vulnerabilities, 2 could not be audited" in lenient.stdout
    assert "WARNING: 2 of 2 dependencies could not be audited, so this is not a clean audit" in lenient.stderr
    assert strict.returncode == 1
    assert "AUDIT_STRICT is set" in strict.stderr
