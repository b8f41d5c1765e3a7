"""The one settings object: grouped in code, flat in the environment, and failing closed.

Every `CACE_*` name an operator sets (README table, deploy/ manifests) keeps working; each lands in
its group; a bad value stops the start naming the variable, never echoing a secret.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from app import server
from app.settings import GROUPS, Settings, SettingsError, env_names, env_var, main


def test_flat_variables_land_in_their_groups(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in {
        "CACE_JOB_WORKERS": "5",
        "CACE_EFFECTS_N_BOOT": "200",
        "CACE_AUTO_CALIBRATE": "false",
        "CACE_CALIBRATION_MAX_PAIRS": "60",
        "CACE_MAX_TOP_K": "7",
        "CACE_OUTBOUND_ALLOW": "10.0.0.0/8, 127.0.0.1",
        "CACE_LLM_SECRET_ENVS": '["OPENAI_KEY@api.example.com"]',
        "CACE_AUTH_ENABLED": "true",
        "CACE_RATE_LIMIT_PER_S": "2.5",
        "CACE_RAY_ACTOR_CPUS": "0.5",
        "CACE_KSERVE_LABELS": "neg,pos",
        "CACE_UPSTREAM_SLOT_WAIT_S": "1",
        "CACE_PREWARM_METHODS": "match",
    }.items():
        monkeypatch.setenv(name, value)
    s = Settings(_env_file=None)
    assert s.jobs.workers == 5 and s.jobs.effects_n_boot == 200
    assert s.calibration.auto is False and s.calibration.max_pairs == 60
    assert s.limits.max_top_k == 7
    assert s.upstream.allow == ["10.0.0.0/8", "127.0.0.1"] and s.upstream.slot_wait_s == 1.0
    assert s.llm.secret_envs == ["OPENAI_KEY@api.example.com"]
    assert s.auth.enabled is True and s.rate_limit.per_s == 2.5 and s.ray.actor_cpus == 0.5
    assert s.kserve.labels == ["neg", "pos"] and s.prewarm_methods == ["match"]
    assert s.jobs.lease_s == 30.0  # untouched: the default


def test_keywords_take_the_flat_names_and_win_over_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CACE_JOB_WORKERS", "5")
    s = Settings(_env_file=None, job_workers=1, data_dir=Path("/tmp/x"), outbound_allow=["127.0.0.1/32"])
    assert s.jobs.workers == 1 and s.data_dir == Path("/tmp/x") and s.upstream.allow == ["127.0.0.1/32"]
    with pytest.raises(SettingsError, match="job_worker"):
        Settings(_env_file=None, job_worker=1)  # a typo is refused, not taken for a default


def test_the_env_file_is_read(tmp_path: Path) -> None:
    env = tmp_path / ".env"
    env.write_text("CACE_JOB_POLL_S=0.5\nCACE_RATE_LIMIT_BURST=7\nCACE_ENCODER_BACKEND=onnx\n")
    s = Settings(_env_file=env)  # the library's own variables may sit beside the service's
    assert s.jobs.poll_s == 0.5 and s.rate_limit.burst == 7


def test_bad_values_fail_naming_each_variable_and_never_echo_a_secret(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CACE_JOB_WORKERS", "many")
    monkeypatch.setenv("CACE_CALIBRATION_MAX_PAIRS", "3")
    monkeypatch.setenv("CACE_LOG_FORMAT", "xml")
    with pytest.raises(SettingsError) as bad:
        Settings(_env_file=None)
    text = str(bad.value)
    for name in ("CACE_JOB_WORKERS", "CACE_CALIBRATION_MAX_PAIRS", "CACE_LOG_FORMAT"):
        assert name in text, text
    assert "'many'" in text and "greater than or equal to 50" in text
    with pytest.raises(SettingsError) as secret:
        Settings(_env_file=None, llm_api_key=["not", "a", "string"])
    assert "CACE_LLM_API_KEY" in str(secret.value) and "not" not in str(secret.value).split("(got")[1]


def test_cace_serve_refuses_to_start_on_a_bad_value(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("CACE_MAX_INFLIGHT", "lots")
    assert server.main(["--port", "1"]) == 2
    assert "CACE_MAX_INFLIGHT" in capsys.readouterr().err


def test_every_variable_has_one_place_and_cace_settings_lists_it(capsys: pytest.CaptureFixture[str]) -> None:
    names = env_names()
    places = [(g, f) for g, f in names.values()]
    assert len(set(places)) == len(places) == len(names)
    for group, model in GROUPS.items():
        for field in model.model_fields:
            assert env_var(group, field) == "CACE_" + model.env_name(field).upper()
    assert env_var("jobs", "workers") == "CACE_JOB_WORKERS"
    assert env_var("calibration", "auto") == "CACE_AUTO_CALIBRATE"
    assert main([]) == 0
    printed = capsys.readouterr().out
    assert all(f"CACE_{flat.upper()} " in printed for flat in names)


def test_every_setting_is_read_by_the_service() -> None:
    """No dead settings: each is read somewhere in app/ under its grouped name."""
    app_dir = Path(__file__).resolve().parents[1] / "app"
    code = "\n".join(p.read_text() for p in app_dir.rglob("*.py") if p.name != "settings.py")
    unread = [
        f"{group}.{name}" if group else name
        for group, name in env_names().values()
        if (f".{group}.{name}" if group else f".{name}") not in code
    ]
    assert not unread, f"settings nothing reads: {unread}"
