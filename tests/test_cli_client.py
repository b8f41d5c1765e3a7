"""`cace explain | effects | report | compare` against a real service (and one run in process).

The commands run as subprocesses, as a CI pipeline would run them: URL and key from the
environment, output files in every format, and `cace compare --max-shift` as a gate whose exit
code says whether a cell's effect moved beyond the threshold.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.servers import ROOT, Server, python
from tests.service_server import TEST_DATA_DIR, service, store_env

pytest_plugins = ["tests.report_fixtures"]  # other_model: a second classifier served over HTTP

ADMIN = "cace_cli-test-admin-key"
PORTS = iter(range(9660, 9700))


@pytest.fixture(scope="module")
def svc(tmp_path_factory: pytest.TempPathFactory, other_model: str) -> Iterator[Server]:
    env = {**store_env("sqlite", tmp_path_factory.mktemp("cli")), "CACE_ADMIN_KEY": ADMIN}
    with service(env, port=next(PORTS)) as srv:
        spec = {"protocol": "hf", "url": other_model, "labels": ["1", "2", "3", "4", "5"]}
        r = httpx.post(
            srv.base_url + "/v1/classifiers",
            json={"name": "bow-lr", "spec": spec},
            headers={"Authorization": f"Bearer {ADMIN}"},
        )
        assert r.status_code == 201, r.text
        yield srv


def cace(
    args: list[str], env: dict[str, str], cwd: Path, timeout: float = 300
) -> subprocess.CompletedProcess:
    full = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "2", "HF_HUB_OFFLINE": "1", **env}
    return subprocess.run(
        [python(), "-m", "app.cli", *args], env=full, cwd=cwd, capture_output=True, text=True, timeout=timeout
    )


def test_report_writes_every_format(svc: Server, tmp_path: Path) -> None:
    env = {"CACE_URL": svc.base_url, "CACE_API_KEY": ADMIN, "CACE_PROGRESS": "1"}
    outs = ["r.json", "r.csv", "r.md", "r.html"]
    args = ["report", "--sample", "30", "--concepts", "food,service"] + [x for o in outs for x in ("-o", o)]
    p = cace(args, env, tmp_path)
    assert p.returncode == 0, p.stderr
    rep = json.loads((tmp_path / "r.json").read_text())
    assert rep["kind"] == "report" and {c["concept"] for c in rep["cells"]} <= {"food", "service"}
    assert (tmp_path / "r.html").read_text().count("<svg") == 2
    assert (tmp_path / "r.csv").read_text().startswith("rank,concept,source,target,label")
    assert rep["cells"][0]["key"] in (tmp_path / "r.md").read_text()
    assert rep["cells"][0]["key"] in p.stdout  # the ranked cells, printed
    assert "report" in p.stderr and "texts" in p.stderr  # the progress line on stderr


def test_compare_is_a_gate(svc: Server, tmp_path: Path) -> None:
    env = {"CACE_URL": svc.base_url, "CACE_API_KEY": ADMIN}
    base = [
        "compare",
        "--baseline",
        "tfidf-lr",
        "--candidate",
        "bow-lr",
        "--sample",
        "30",
        "--concepts",
        "food,service",
    ]
    moved = cace([*base, "--max-shift", "0.05", "-o", "c.html", "-o", "c.json"], env, tmp_path)
    assert moved.returncode == 1, moved.stderr
    result = json.loads((tmp_path / "c.json").read_text())
    flagged = [c["key"] for c in result["cells"] if c["flagged"]]
    assert flagged and all(k in moved.stderr for k in flagged)
    assert (tmp_path / "c.html").read_text().count("<svg") == 2
    # The same comparison with a looser threshold passes.
    assert cace([*base, "--max-shift", "1.0"], env, tmp_path).returncode == 0
    # A per-concept threshold file overrides --max-shift for its concepts.
    (tmp_path / "t.json").write_text(json.dumps({"food": 1.0, "service": 1.0}))
    assert cace([*base, "--max-shift", "0.0", "--thresholds", "t.json"], env, tmp_path).returncode == 0
    (tmp_path / "t.json").write_text(json.dumps({"food": 1.0}))
    assert cace([*base, "--max-shift", "0.0", "--thresholds", "t.json"], env, tmp_path).returncode == 1


def test_explain_effects_and_problems(svc: Server, tmp_path: Path) -> None:
    env = {"CACE_URL": svc.base_url, "CACE_API_KEY": ADMIN}
    p = cace(
        ["explain", "--text", "Great pasta, rude staff.", "--concept", "service", "--target", "Positive"],
        env,
        tmp_path,
    )
    assert p.returncode == 0, p.stderr
    assert set(json.loads(p.stdout)["icace"]) == {"1", "2", "3", "4", "5"}
    (tmp_path / "t.jsonl").write_text('"Great pasta, rude staff."\n{"text": "Cold soup.", "id": "b"}\n')
    p = cace(
        [
            "effects",
            "--texts",
            "t.jsonl",
            "--concept",
            "food",
            "--target",
            "Positive",
            "-o",
            "e.jsonl",
            "-o",
            "e.csv",
        ],
        env,
        tmp_path,
    )
    assert p.returncode == 0, p.stderr
    assert len((tmp_path / "e.jsonl").read_text().splitlines()) == 2
    assert (tmp_path / "e.csv").read_text().startswith("label,cace,ci_low,ci_high")
    # A problem from the service: exit 3, its title and the field on stderr.
    p = cace(["report", "--classifier", "nope", "--sample", "5"], env, tmp_path)
    assert p.returncode == 3 and "body.classifier" in p.stderr, p.stderr
    # A wrong key is the service's 401.
    p = cace(["report", "--sample", "5"], {**env, "CACE_API_KEY": "cace_wrong"}, tmp_path)
    assert p.returncode == 3 and "401" in p.stderr
    # No URL: a usage error, before anything is sent.
    p = cace(["report"], {"CACE_URL": ""}, tmp_path)
    assert p.returncode == 2 and "CACE_URL" in p.stderr


def test_report_in_process(tmp_path: Path) -> None:
    env = {
        "CACE_DATA_DIR": str(TEST_DATA_DIR),
        "CACE_AUTO_CALIBRATE": "false",
        **store_env("sqlite", tmp_path),
        "CACE_URL": "",
    }
    p = cace(["report", "--in-process", "--sample", "12", "--concepts", "noise", "-o", "r.md"], env, tmp_path)
    assert p.returncode == 0, p.stderr
    assert "noise:" in (tmp_path / "r.md").read_text()
