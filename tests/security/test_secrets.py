"""No secret is committed: detect-secrets scans every git-tracked file against ``.secrets.baseline``.

``.secrets.baseline`` lists what detect-secrets finds today, each entry audited as not a secret
(``is_secret: false``) and explained by a rule of ``ALLOWED`` below. Any finding that is not in
the baseline fails ``test_no_new_secret_is_committed``: a real credential must be removed (and
rotated), a false positive audited into the baseline with a reason here.

Refreshing the baseline after a reviewed change keeps the audit flags of existing entries::

    .venv/bin/detect-secrets scan --baseline .secrets.baseline $(git ls-files)
    .venv/bin/detect-secrets audit .secrets.baseline

Card numbers in tests (4242..., 4000...) are the payment sandbox's documented test cards;
detect-secrets has no card-number detector, so they appear in neither the scan nor the baseline.
"""

from __future__ import annotations

import contextlib
import fnmatch
import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
from detect_secrets.core.secrets_collection import SecretsCollection
from detect_secrets.settings import transient_settings

ROOT = Path(__file__).resolve().parents[2]
BASELINE = ROOT / ".secrets.baseline"

# Why each kind of baseline entry is not a secret: (path pattern, detector) -> reason.
ALLOWED: dict[tuple[str, str], str] = {
    ("src/skybook/booking/model.py", "Base64 High Entropy String"): "the record-locator alphabet (23456789ABC...)",
    ("src/skybook/identity/schemas.py", "Secret Keyword"): "example passwords shown in the OpenAPI document",
    ("src/skybook/seed/demo.py", "Secret Keyword"): "the documented demo password of 'make run', refused in production",
    ("tests/*", "Secret Keyword"): "passwords and signing secrets of throwaway test accounts and test settings",
}


def _tracked_files() -> list[str]:
    try:
        out = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError) as exc:
        if os.environ.get("CI", "").lower() == "true":
            raise
        pytest.skip(f"not a git checkout ({exc})")
    files = [f for f in out.decode().split("\0") if f]
    return sorted(f for f in files if f != BASELINE.name and (ROOT / f).is_file())


def _baseline() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(BASELINE.read_text())
    return data


def _scan(files: list[str], settings: dict[str, Any]) -> SecretsCollection:
    """Scan with the plugins and filters the baseline was made with, from the repository root."""
    found = SecretsCollection()
    with contextlib.chdir(ROOT), transient_settings(settings):
        for f in files:
            found.scan_file(f)
    return found


def _describe(secrets: SecretsCollection) -> list[str]:
    return [f"{filename}:{secret.line_number}: {secret.type}" for filename, secret in secrets]


@pytest.fixture(scope="module")
def settings() -> dict[str, Any]:
    baseline = _baseline()
    return {"plugins_used": baseline["plugins_used"], "filters_used": baseline["filters_used"]}


def test_no_new_secret_is_committed(settings: dict[str, Any]) -> None:
    files = _tracked_files()
    assert len(files) > 50, files
    known = SecretsCollection.load_from_baseline(_baseline())
    new = _scan(files, settings) - known
    assert not new, "secrets found outside .secrets.baseline:\n" + "\n".join(_describe(new))


def test_every_baseline_entry_is_audited_and_explained() -> None:
    problems = []
    for filename, entries in _baseline()["results"].items():
        for entry in entries:
            where = f"{filename}:{entry['line_number']}: {entry['type']}"
            if entry.get("is_secret") is not False:
                problems.append(f"{where}: not audited as a false positive (detect-secrets audit)")
            if not any(fnmatch.fnmatch(filename, p) and entry["type"] == t for p, t in ALLOWED):
                problems.append(f"{where}: no reason in ALLOWED")
    assert not problems, "\n".join(problems)


def test_the_scan_finds_a_planted_secret(settings: dict[str, Any], tmp_path: Path) -> None:
    # Built at run time, so this file does not itself hold them.
    aws_key = "AKIA" + "Q3EGRWLRNXKE7YTP"
    private_key = "-----BEGIN " + "RSA PRIVATE KEY-----"
    planted = tmp_path / "config.py"
    planted.write_text(f'AWS_ACCESS_KEY_ID = "{aws_key}"\nKEY = """{private_key}\nMIIEow..."""\n')
    found = {secret.type for _, secret in _scan([str(planted)], settings)}
    assert {"AWS Access Key", "Private Key"} <= found, found
