"""deploy/k8s: every manifest validated by kubernetes-validate (offline schemas, strict), and the
pieces checked against each other, the images and deploy/nats/."""

from __future__ import annotations

import shutil
import subprocess
import sysconfig
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from rethink.shared.settings import SERVICES, Settings
from tests.deploy.nats_cluster import NATS_DIR, NODES

BASE = Path(__file__).resolve().parents[2] / "deploy" / "k8s" / "base"
K8S_VERSION = "1.37.0"


def _docs(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


KUSTOMIZATION = yaml.safe_load((BASE / "kustomization.yaml").read_text())
MANIFESTS = sorted(p for p in BASE.glob("*.yaml") if p.name != "kustomization.yaml")
RESOURCES = [(p.name, d) for p in MANIFESTS for d in _docs(p)]


def _one(kind: str, name: str) -> dict:
    [found] = [d for _, d in RESOURCES if d["kind"] == kind and d["metadata"]["name"] == name]
    return found


def _containers(kind: str, name: str) -> list[dict]:
    return _one(kind, name)["spec"]["template"]["spec"]["containers"]


def test_only_nats_pods_reach_the_routes_and_only_rethink_pods_reach_postgres():
    nats = _one("NetworkPolicy", "nats")["spec"]
    assert nats["podSelector"] == {"matchLabels": {"app.kubernetes.io/name": "nats"}}
    [routes] = [rule for rule in nats["ingress"] if {"port": 6222, "protocol": "TCP"} in rule["ports"]]
    assert routes["from"] == [{"podSelector": {"matchLabels": {"app.kubernetes.io/name": "nats"}}}]
    pg = _one("NetworkPolicy", "postgres")["spec"]["ingress"][0]["from"][0]["podSelector"]["matchExpressions"][0]
    users = {d["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/name"]
             for _, d in RESOURCES if d["kind"] in {"Deployment", "Job"}}
    assert set(pg["values"]) == users == {*SERVICES, "rethink-bootstrap"}


def test_the_kustomization_lists_every_manifest_and_only_those():
    assert sorted(KUSTOMIZATION["resources"]) == [p.name for p in MANIFESTS]


@pytest.mark.parametrize("resource", RESOURCES, ids=lambda r: f"{r[0]}:{r[1]['kind']}/{r[1]['metadata']['name']}")
def test_kubernetes_validate_accepts_the_manifest_strictly(resource):
    _, doc = resource
    kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


def test_the_validator_rejects_a_misspelt_field():
    doc = yaml.safe_load(yaml.safe_dump(_one("Deployment", "intake")))
    doc["spec"]["template"]["spec"]["containers"][0]["livenesProbe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


def test_the_nats_configmap_is_deploy_nats_verbatim():
    data = _one("ConfigMap", "nats-config")["data"]
    assert set(data) == {p.name for p in NATS_DIR.glob("*.conf")}
    for name, text in data.items():
        assert text == (NATS_DIR / name).read_text(), f"copy deploy/nats/{name} into {BASE / 'nats-config.yaml'}"


def test_three_nats_pods_each_run_their_node_config_under_the_name_the_routes_use(tmp_path: Path):
    sts = _one("StatefulSet", "nats")
    assert sts["spec"]["replicas"] == 3 and sts["spec"]["volumeClaimTemplates"][0]["metadata"]["name"] == "data"
    [nats] = sts["spec"]["template"]["spec"]["containers"]
    assert {m["mountPath"] for m in nats["volumeMounts"]} == {"/etc/nats", "/data"}
    shell = nats["command"][2].replace("$$", "$")  # Kubernetes turns $$ into $ before the shell sees it
    for ordinal, node in enumerate(NODES):
        out = subprocess.run(["sh", "-c", shell.replace("exec nats-server", "echo")],
                             env={"HOSTNAME": f"nats-{ordinal}", "PATH": "/usr/bin:/bin"},
                             capture_output=True, text=True, check=True).stdout
        assert out.strip() == f"--config /etc/nats/{node}.conf"
        service = _one("Service", node)
        assert service["spec"]["clusterIP"] == "None" and service["spec"]["publishNotReadyAddresses"] is True
        assert service["spec"]["selector"]["statefulset.kubernetes.io/pod-name"] == f"nats-{ordinal}"
    sources = sts["spec"]["template"]["spec"]["volumes"][0]["projected"]["sources"]
    assert {"configMap": {"name": "nats-config"}} in sources
    auth = next(s["secret"] for s in sources if "secret" in s)
    assert auth["items"] == [{"key": "nats-auth.conf", "path": "auth/nats-auth.conf"}]
    assert "include ./auth/nats-auth.conf" in (NATS_DIR / "cluster.conf").read_text()


@pytest.mark.parametrize("service", SERVICES)
def test_each_service_deployment_runs_its_image_with_probes_limits_and_a_non_root_user(service: str):
    [c] = _containers("Deployment", service)
    assert c["image"] == f"rethink/{service}" and c["args"] == ["rethink", "service", "run", service]
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert c["ports"] == [{"name": "http", "containerPort": 8080}]
    assert {"cpu", "memory"} <= set(c["resources"]["limits"])
    pod = _one("Deployment", service)["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] == 10001
    env = {e["name"]: e for e in c["env"]}
    db = env[f"RETHINK_DATABASE_URL__{service.upper()}"]["valueFrom"]["secretKeyRef"]["key"]
    assert db == f"{service.upper()}_DATABASE_URL"
    own = {f"RETHINK_DATABASE_URL__{service.upper()}"} | ({"RETHINK_DATABASE_URL__OUTBOX"} if service == "scheduling" else set())
    assert {e for e in env if e.startswith("RETHINK_DATABASE_URL__")} == own
    assert env["RETHINK_HEALTH_PORT"]["value"] == "8080"
    assert int(env["RETHINK_READY_MAX_PENDING"]["value"]) > 0  # readiness includes "caught up"


@pytest.mark.parametrize("service", SERVICES)
def test_services_run_two_replicas_except_scheduling_whose_mail_volume_is_read_write_once(service: str):
    deployment = _one("Deployment", service)
    if service == "scheduling":
        assert deployment["spec"]["replicas"] == 1
        [claim] = [d for _, d in RESOURCES if d["kind"] == "PersistentVolumeClaim" and "mail" in d["metadata"]["name"]]
        assert claim["spec"]["accessModes"] == ["ReadWriteOnce"]
    else:
        assert deployment["spec"]["replicas"] == 2
    budget = _one("PodDisruptionBudget", service)["spec"]
    assert budget["maxUnavailable"] == 1
    assert budget["selector"]["matchLabels"] == deployment["spec"]["selector"]["matchLabels"]


def test_the_service_manifests_differ_only_by_the_service_name():
    intake = (BASE / "intake.yaml").read_text().split("\napiVersion: v1\n", 1)[1]
    for service in SERVICES[1:]:
        mine = (BASE / f"{service}.yaml").read_text().split("\napiVersion: v1\n", 1)[1]
        if service == "scheduling":  # and its mail: the volume for .eml files, the outbox's database
            mine = _without_mail(mine)
        assert mine == intake.replace("intake", service).replace("INTAKE", service.upper()), service


_REPLICAS_TWO = """  # Two: they share one durable consumer, each event applied once in effect (tests/reliability
  # kills one of two under load); losing a pod or a node leaves the other working.
  replicas: 2
"""


def _without_mail(text: str) -> str:
    text = text.split("\n---\napiVersion: v1\nkind: PersistentVolumeClaim\n", 1)[0] + "\n"
    head, _, rest = text.partition("  replicas: 1\n")  # one, for its mail volume (the comment above says why)
    head = head[:head.rindex("spec:\n") + len("spec:\n")]
    text = head + _REPLICAS_TWO + rest
    lines = text.splitlines(keepends=True)
    drop = {i for i, line in enumerate(lines) if "mail" in line}
    outbox = next(i for i, line in enumerate(lines) if "RETHINK_DATABASE_URL__OUTBOX" in line)
    drop |= {outbox, outbox + 1, outbox + 2}  # the variable, its valueFrom and its secretKeyRef
    return "".join(line for i, line in enumerate(lines) if i not in drop)


def test_the_postgres_init_configmap_is_deploy_postgres_verbatim_and_makes_each_services_database():
    sql = BASE.parents[1] / "postgres" / "init-databases.sql"
    assert _one("ConfigMap", "postgres-init")["data"] == {"10-databases.sql": sql.read_text()}
    example = (BASE / "credentials.env.example").read_text()
    for service in (*SERVICES, "outbox"):
        assert f"CREATE DATABASE rethink_{service};" in sql.read_text()
        assert f"{service.upper()}_DATABASE_URL=postgresql+psycopg://rethink:CHANGE-ME@postgres:5432/rethink_{service}\n" \
            in example


def test_the_bootstrap_job_keeps_three_replicas_and_migrates_every_service():
    [c] = _containers("Job", "rethink-bootstrap")
    env = {e["name"]: e for e in c["env"]}
    assert c["image"] == "rethink/bootstrap" and env["RETHINK_STREAM_REPLICAS"]["value"] == "3"
    assert {f"RETHINK_DATABASE_URL__{s.upper()}" for s in (*SERVICES, "outbox")} <= set(env)


def test_every_secret_reference_is_generated_with_that_key():
    generated = {g["name"]: g for g in KUSTOMIZATION["secretGenerator"]}
    example = (BASE / "credentials.env.example").read_text()
    keys = {line.split("=", 1)[0] for line in example.splitlines() if "=" in line and not line.startswith("#")}
    assert generated["rethink-credentials"]["envs"] == ["secrets/credentials.env"]
    refs = [e["valueFrom"]["secretKeyRef"] for _, d in RESOURCES if d["kind"] in {"Deployment", "StatefulSet", "Job"}
            for c in d["spec"]["template"]["spec"]["containers"] for e in c.get("env", []) if "valueFrom" in e]
    assert refs
    for ref in refs:
        assert ref["name"] == "rethink-credentials" and ref["key"] in keys, ref
    assert generated["nats-auth"]["files"] == ["nats-auth.conf=secrets/nats-auth.conf"]
    url = next(line.split("=", 1)[1] for line in example.splitlines() if line.startswith("RETHINK_NATS_URL="))
    assert [u.rsplit("@", 1)[1] for u in url.split(",")] == [f"{n}:4222" for n in NODES]


def test_every_rethink_variable_in_the_manifests_is_a_real_setting():
    known = set(Settings.model_fields)
    names = {e["name"] for _, d in RESOURCES if d["kind"] in {"Deployment", "Job"}
             for c in d["spec"]["template"]["spec"]["containers"] for e in c["env"]}
    settings = {n.removeprefix("RETHINK_").split("__")[0].lower() for n in names if n.startswith("RETHINK_")}
    assert settings and settings <= known, settings - known


def test_every_image_is_built_by_a_dockerfile_or_pinned():
    docker = BASE.parents[1] / "docker"
    tags = {i["name"]: i["newTag"] for i in KUSTOMIZATION["images"]}
    for _, d in RESOURCES:
        if d["kind"] not in {"Deployment", "StatefulSet", "Job"}:
            continue
        for c in d["spec"]["template"]["spec"]["containers"]:
            if c["image"].startswith("rethink/"):
                assert (docker / f"{c['image'].split('/')[1]}.Dockerfile").exists() and c["image"] in tags
            else:
                assert ":" in c["image"] and not c["image"].endswith(":latest"), c["image"]


def _kustomize(folder: Path) -> subprocess.CompletedProcess[str]:
    kubectl = Path(sysconfig.get_path("scripts")) / "kubectl"
    return subprocess.run([str(kubectl), "kustomize", str(folder)], capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> list[dict]:
    """`kubectl kustomize` of the base, with the secrets files made as the README says."""
    base = tmp_path_factory.mktemp("k8s") / "base"
    shutil.copytree(BASE, base)
    (base / "secrets").mkdir()
    shutil.copy(BASE / "credentials.env.example", base / "secrets" / "credentials.env")
    (base / "secrets" / "nats-auth.conf").write_text('authorization { users: [{user: "u", password: "p"}] }\n')
    result = _kustomize(base)
    assert result.returncode == 0, result.stderr
    return [d for d in yaml.safe_load_all(result.stdout) if d]


def test_kustomize_refuses_to_render_without_the_secrets_files(tmp_path: Path):
    shutil.copytree(BASE, tmp_path / "base")
    result = _kustomize(tmp_path / "base")
    assert result.returncode != 0 and "secrets/" in result.stderr


def test_what_kustomize_renders_is_valid_kubernetes(rendered: list[dict]):
    kinds = {d["kind"] for d in rendered}
    assert {"StatefulSet", "Deployment", "Job", "Secret", "ConfigMap", "Service", "NetworkPolicy"} <= kinds
    for doc in rendered:
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


def test_the_rendered_secrets_are_the_ones_every_reference_names(rendered: list[dict]):
    secrets = {d["metadata"]["name"]: d for d in rendered if d["kind"] == "Secret"}
    assert {n.rsplit("-", 1)[0] for n in secrets} == {"rethink-credentials", "nats-auth"}  # name-content hash
    referenced = set()
    for doc in rendered:
        if doc["kind"] not in {"Deployment", "StatefulSet", "Job"}:
            continue
        pod = doc["spec"]["template"]["spec"]
        for c in pod["containers"]:
            assert ":" in c["image"], c["image"]  # every image tagged
            for e in c.get("env", []):
                if "valueFrom" in e:
                    ref = e["valueFrom"]["secretKeyRef"]
                    assert ref["key"] in secrets[ref["name"]]["data"], ref
                    referenced.add(ref["name"])
        for volume in pod.get("volumes", []):
            for source in volume.get("projected", {}).get("sources", []):
                if "secret" in source:
                    assert source["secret"]["name"] in secrets
                    referenced.add(source["secret"]["name"])
    assert referenced == set(secrets)
