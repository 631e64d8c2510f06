"""Audit the pinned dependencies for known vulnerabilities with pip-audit.

Fails on any known vulnerability. pip-audit reports a dependency it could not look up (the
vulnerability service unreachable, or not knowing the release) as skipped and still exits 0, which
reads like a clean audit; this script counts those and warns, naming how many. With AUDIT_STRICT=1
a dependency that could not be audited fails the audit too. AUDIT_OSV_URL points the audit at an
OSV-compatible service (e.g. a mirror) instead of PyPI's.

    .venv/bin/python .ci/audit_dependencies.py [REQUIREMENTS]    # default: constraints.txt
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

CONSTRAINTS = Path(__file__).resolve().parent.parent / "constraints.txt"


def pinned(requirements: Path) -> int:
    return sum(1 for line in requirements.read_text().splitlines() if "==" in line and not line.startswith("#"))


def main(requirements: Path) -> int:
    strict = os.environ.get("AUDIT_STRICT", "") not in ("", "0", "false")
    osv_url = os.environ.get("AUDIT_OSV_URL")
    service = ["--vulnerability-service", "osv", "--osv-url", osv_url] if osv_url else []
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "audit.json"
        run = subprocess.run(
            [sys.executable, "-m", "pip_audit", "--requirement", str(requirements), *service]
            # Every dependency is pinned in the file already.
            + ["--no-deps", "--disable-pip", "--progress-spinner", "off", "--format", "json", "--output", str(report)],
            capture_output=True,
            text=True,
        )
        dependencies = json.loads(report.read_text())["dependencies"] if report.exists() else None

    if dependencies is None:  # pip-audit stopped: nothing was audited
        error = run.stderr.strip().splitlines()[-1:] or [f"exit {run.returncode}"]
        total, vulnerable, skipped, first_reason = pinned(requirements), [], pinned(requirements), error[0]
    else:
        total = len(dependencies)
        vulnerable = [d for d in dependencies if d.get("vulns")]
        reasons = [d["skip_reason"] for d in dependencies if "skip_reason" in d]
        skipped, first_reason = len(reasons), (reasons or [""])[0]
    print(
        f"dependency audit: {total} pinned, {total - skipped} audited, {len(vulnerable)} with known "
        f"vulnerabilities, {skipped} could not be audited"
    )
    for dependency in vulnerable:
        for vuln in dependency["vulns"]:
            fixed = ", ".join(vuln.get("fix_versions") or []) or "no fixed release"
            print(f"  VULNERABLE {dependency['name']} {dependency['version']}: {vuln['id']} (fixed in {fixed})")
    sys.stdout.flush()  # the summary first, then the warning
    if skipped:
        print(
            f"WARNING: {skipped} of {total} dependencies could not be audited, so this is not a clean audit "
            f"({first_reason}).",
            file=sys.stderr,
        )
    if vulnerable:
        return 1
    if skipped and strict:
        print("AUDIT_STRICT is set: dependencies that could not be audited fail the audit.", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1]) if len(sys.argv) > 1 else CONSTRAINTS))
