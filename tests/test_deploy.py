"""Deployment artefacts, validated offline.

Kubernetes manifests are checked against the Kubernetes JSON schemas bundled in
`kubernetes-validate` (strict: unknown fields fail). The KServe InferenceService is a CRD with
no bundled schema, so its predictor and explainer pod specs are validated as Pods. Every
CACE_* variable a manifest sets must be a real setting with a value that parses, and the
Dockerfile must build from files that exist and install through scripts/setup.sh, the script
CI itself runs (there is no container engine here to build the image).
"""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from app.settings import Settings, env_names
from benchmarks.harness.servers import ROOT

DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
K8S_VERSION = kubernetes_validate.latest_version()


def _docs(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def _manifests() -> list[Path]:
    return sorted(p for p in K8S.glob("*.yaml") if p.name != "kustomization.yaml")


def _check_settings(env: dict[str, str], where: str) -> None:
    """Each CACE_* name is a Settings field and the values build a valid Settings."""
    fields = {f"CACE_{flat.upper()}" for flat in env_names()}
    cace = {k: v for k, v in env.items() if k.startswith("CACE_")}
    unknown = sorted(set(cace) - fields)
    assert not unknown, f"{where}: {unknown} are not settings in app/settings.py"
    with pytest.MonkeyPatch.context() as mp:
        for k, v in cace.items():
            mp.setenv(k, str(v))
        Settings(_env_file=None)


@pytest.mark.parametrize("path", _manifests(), ids=lambda p: p.name)
def test_kubernetes_manifest_validates_strictly(path: Path) -> None:
    for doc in _docs(path):
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


def test_kustomization_lists_every_manifest() -> None:
    kust = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    assert sorted(kust["resources"]) == sorted(p.name for p in _manifests())


def test_required_kinds_are_present_and_wired() -> None:
    by_kind: dict[str, dict[str, Any]] = {}
    for p in _manifests():
        for d in _docs(p):
            by_kind[d["kind"]] = d
    assert {
        "Deployment",
        "Service",
        "HorizontalPodAutoscaler",
        "PersistentVolumeClaim",
        "ConfigMap",
        "Secret",
    } <= set(by_kind)
    dep = by_kind["Deployment"]
    pod = dep["spec"]["template"]["spec"]
    labels = dep["spec"]["template"]["metadata"]["labels"]
    assert by_kind["Service"]["spec"]["selector"].items() <= labels.items()
    assert by_kind["HorizontalPodAutoscaler"]["spec"]["scaleTargetRef"]["name"] == dep["metadata"]["name"]
    claims = {v["persistentVolumeClaim"]["claimName"] for v in pod["volumes"] if "persistentVolumeClaim" in v}
    assert by_kind["PersistentVolumeClaim"]["metadata"]["name"] in claims
    assert pod["securityContext"]["runAsNonRoot"] is True
    (c,) = pod["containers"]
    assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
    cm = by_kind["ConfigMap"]
    assert c["envFrom"][0]["configMapRef"]["name"] == cm["metadata"]["name"]
    secret_keys = set(by_kind["Secret"]["stringData"])
    for e in c["env"]:
        ref = e.get("valueFrom", {}).get("secretKeyRef")
        if ref:
            assert ref["name"] == by_kind["Secret"]["metadata"]["name"] and ref["key"] in secret_keys
    _check_settings(
        {**cm["data"], **{e["name"]: "x" for e in c["env"] if e["name"] == "CACE_INSTANCE_ID"}}, "configmap"
    )
    keys = json.loads(by_kind["Secret"]["stringData"]["api-keys.json"])
    assert all(re.fullmatch(r"[0-9a-f]{64}", k["sha256"]) for k in keys)  # hashes only, never keys


def test_kserve_inferenceservice_has_a_valid_explainer_slot() -> None:
    (isvc,) = _docs(DEPLOY / "kserve" / "inferenceservice.yaml")
    assert isvc["apiVersion"] == "serving.kserve.io/v1beta1" and isvc["kind"] == "InferenceService"
    for slot in ("predictor", "explainer"):
        spec = isvc["spec"][slot]
        pod = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": f"check-{slot}"},
            "spec": {"containers": spec["containers"], "volumes": spec.get("volumes", [])},
        }
        kubernetes_validate.validate(pod, K8S_VERSION, strict=True)
    (explainer,) = isvc["spec"]["explainer"]["containers"]
    env = {e["name"]: e.get("value", "") for e in explainer["env"]}
    _check_settings(env, "kserve explainer")
    assert env["CACE_KSERVE_PREDICTOR_HOST"].startswith(isvc["metadata"]["name"] + "-predictor.")
    # The predictor's in-cluster name must pass the explainer's own outbound policy.
    from explainers.net import OutboundPolicy

    policy = OutboundPolicy.from_allow(env["CACE_OUTBOUND_ALLOW"])
    assert policy.host_allowed(env["CACE_KSERVE_PREDICTOR_HOST"])
    assert explainer["args"][:2] == ["cace", "serve"]


def test_compose_services_are_wired() -> None:
    compose = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
    services = compose["services"]
    assert {"cace", "model", "llm"} <= set(services)
    for name, svc in services.items():
        for dep in svc.get("depends_on", {}):
            assert dep in services, f"{name} depends on unknown {dep}"
        for s in svc.get("secrets", []):
            assert (DEPLOY / compose["secrets"][s]["file"]).exists()
    env = services["cace"]["environment"]
    _check_settings({k: str(v) for k, v in env.items()}, "compose cace")
    allow = env["CACE_OUTBOUND_ALLOW"].split(",")
    assert "model" in allow and "llm" in allow
    assert env["CACE_LLM_BASE_URL"].startswith("http://llm:")
    assert importlib.util.find_spec(services["model"]["command"][2]) is not None


def _stages(dockerfile: str) -> list[list[tuple[str, str]]]:
    text = re.sub(r"\\\n", " ", dockerfile)
    stages: list[list[tuple[str, str]]] = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        instr, _, rest = line.partition(" ")
        if instr.upper() == "FROM":
            stages.append([])
        if stages:
            stages[-1].append((instr.upper(), rest.strip()))
    return stages


def test_dockerfile_is_multistage_nonroot_with_healthcheck() -> None:
    stages = _stages((ROOT / "Dockerfile").read_text())
    assert len(stages) >= 2
    build, final = stages[0], stages[-1]
    # The build installs through scripts/setup.sh: the same commands `make test` and CI run.
    assert ("RUN", "bash scripts/setup.sh run") in build
    for instr, rest in build:
        if instr == "COPY":
            for src in rest.split()[:-1]:
                if not src.startswith("--"):
                    assert (ROOT / src).exists(), f"COPY source {src} is missing"
    assert any(i == "COPY" and "--from=build" in r for i, r in final)
    users = [r for i, r in final if i == "USER"]
    assert users and users[-1].split(":")[0] not in ("0", "root")
    dep = _docs(K8S / "deployment.yaml")[0]
    assert str(dep["spec"]["template"]["spec"]["securityContext"]["runAsUser"]) == users[-1].split(":")[0]
    health = [r for i, r in final if i == "HEALTHCHECK"]
    assert health and "/healthz" in health[0]
    cmd = json.loads(next(r for i, r in final if i == "CMD"))
    from app.cli import COMMANDS

    assert cmd[0] == "cace" and cmd[1] in COMMANDS
    env = {}
    for i, r in final:
        if i == "ENV":
            env.update(dict(re.findall(r"(\w+)=(\S+)", r)))
    _check_settings(env, "Dockerfile")
    assert ("EXPOSE", env["CACE_PORT"]) in final


def test_setup_script_pins_cpu_torch_like_the_dockerfile() -> None:
    setup = (ROOT / "scripts" / "setup.sh").read_text()
    assert "torch==2.13.0" in setup
    docker = (ROOT / "Dockerfile").read_text()
    assert "download.pytorch.org/whl/cpu" in docker


def test_dockerignore_keeps_local_state_out() -> None:
    ignored = set((ROOT / ".dockerignore").read_text().split())
    assert {".git", ".venv", "var"} <= ignored


def test_kuberay_raycluster_pods_validate_and_match_the_pinned_ray() -> None:
    """A RayCluster is a CRD with no bundled schema: its head and worker pod templates are validated
    strictly as Pods, and its wiring (ConfigMap, volume claim, Ray version, group sizes) is checked."""
    (rc,) = _docs(K8S / "ray" / "raycluster.yaml")
    assert rc["apiVersion"] == "ray.io/v1" and rc["kind"] == "RayCluster"
    templates = {"head": rc["spec"]["headGroupSpec"]["template"]}
    for group in rc["spec"]["workerGroupSpecs"]:
        assert 0 <= group["minReplicas"] <= group["replicas"] <= group["maxReplicas"]
        templates[group["groupName"]] = group["template"]
    names = {p.stem: d["metadata"]["name"] for p in _manifests() for d in _docs(p)}
    for slot, tpl in templates.items():
        pod = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": f"check-{slot}", **tpl.get("metadata", {})},
            "spec": tpl["spec"],
        }
        kubernetes_validate.validate(pod, K8S_VERSION, strict=True)
        assert tpl["spec"]["securityContext"]["runAsNonRoot"] is True
        for c in tpl["spec"]["containers"]:
            assert c["envFrom"][0]["configMapRef"]["name"] == names["configmap"]
            _check_settings({e["name"]: e.get("value", "") for e in c.get("env", [])}, f"raycluster {slot}")
        for v in tpl["spec"].get("volumes", []):
            assert v["persistentVolumeClaim"]["claimName"] == names["pvc"]
    pinned = re.search(r'"ray==([\d.]+)\.\*"', (ROOT / "pyproject.toml").read_text())
    assert pinned and rc["spec"]["rayVersion"].startswith(pinned.group(1) + ".")
