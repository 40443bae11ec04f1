"""Tests of the Helm chart in charts/ltigate.

The chart is rendered by Helm's own engine (the Go SDK, through
helm-python-sdk) for every charts/ltigate/ci/*-values.yaml, each manifest is
validated against the Kubernetes schemas (kubernetes-validate, offline), the
chart is linted, and the rendered ltigate.toml is given to
`ltigate check-config` with the secret files the pod would mount. The
configuration keys the chart knows are checked against the configuration
reference, config/ltigate.toml, which lists every key ltigate reads.

The binary is $LTIGATE_BIN (default target/debug/ltigate). Without it the
check-config tests skip, except under CI, where they fail.
"""

from __future__ import annotations

import base64
import copy
import functools
import hashlib
import json
import os
import re
import subprocess
import threading
import tomllib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import helm_python as helm
import kubernetes_validate
import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "ltigate"
CI_DIR = CHART / "ci"
README = CHART / "README.md"
REFERENCE = REPO / "config" / "ltigate.toml"
RAW_CONFIG = REPO / "src" / "config" / "raw.rs"
TOOL_KEY = REPO / "tests" / "vectors" / "tool-key-rsa2048.pem"
TOOL_KEY_PKCS1 = REPO / "tests" / "vectors" / "tool-key-rsa2048-pkcs1.pem"
ASSERTION_KEY = REPO / "tests" / "vectors" / "assertion-key-p256.pem"
ASSERTION_KEY_SEC1 = REPO / "tests" / "vectors" / "assertion-key-p256-sec1.pem"
RELEASE = "demo"
NAMESPACE = "learning"

SECRET_DIR = "/var/run/secrets/ltigate"
DATA_DIR = "/var/lib/ltigate"
CONFIG_PATH = "/etc/ltigate/ltigate.toml"

# One values file per feature, each rendered, linted and validated.
FEATURES = {
    "standalone",
    "sidecar",
    "redis-enabled",
    "existing-secret",
    "servicemonitor",
    "hpa",
    "networkpolicy",
    "ingress",
    "lti13",
    "assertion",
}

# Keys of ltigate.toml the chart sets itself (listeners, store file, and the
# secrets, which are *_file paths into the mounted Secret).
CHART_MANAGED = {
    "server.listen",
    "server.admin_listen",
    "upstream.api_token",
    "session.secret",
    "session.previous_secrets",
    "store.path",
    "webhook.secret",
    "consumers.secret",
    "consumers.secrets",
    "lti13.key",
    "lti13.next_key_files",
    "lti13.previous_key_files",
    "session.assertion_key",
    "session.assertion_next_key_files",
    "session.assertion_previous_key_files",
}
SECRET_KEYS = {"api_token", "secret", "secrets", "previous_secrets"}

helm.disable_logging()
CI_FILES = sorted(CI_DIR.glob("*-values.yaml"))
CI_IDS = [p.name.removesuffix("-values.yaml") for p in CI_FILES]


# ---------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------


@functools.cache
def chart() -> helm.Chart:
    return helm.Chart.load(CHART)


def load_values(path: Path) -> dict:
    """Values as `helm -f` reads them."""
    return helm.values_from_yaml(path.read_text())


def merged(base: dict, override: dict) -> dict:
    """`override` deep-merged into a copy of `base`; lists are replaced and
    None removes a key."""
    out = copy.deepcopy(base)
    for key, value in override.items():
        if value is None:
            out.pop(key, None)
        elif isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merged(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def render(values: dict) -> list[dict]:
    """Every manifest the chart renders, NOTES.txt left out.

    Helm returns one string per template; a template may hold several
    documents separated by `---`.
    """
    out = chart().render(values, name=RELEASE, namespace=NAMESPACE, is_install=True)
    docs = []
    for template, text in sorted(out.items()):  # template path → its output
        if template.endswith("NOTES.txt"):
            continue
        for part in re.split(r"(?m)^---[ \t]*$", text):
            doc = yaml.safe_load(part)
            if doc:
                docs.append(doc)
    return docs


@functools.cache
def _rendered_json(name: str) -> str:
    return json.dumps(render(load_values(CI_DIR / f"{name}-values.yaml")))


def rendered(name: str) -> list[dict]:
    """The manifests of a ci values file (rendered once, a fresh copy each call)."""
    return json.loads(_rendered_json(name))


def of_kind(docs: list[dict], kind: str) -> list[dict]:
    return [d for d in docs if d["kind"] == kind]


def one(docs: list[dict], kind: str) -> dict:
    found = of_kind(docs, kind)
    assert len(found) == 1, f"expected one {kind}, got {len(found)}"
    return found[0]


def gateway(docs: list[dict]) -> dict:
    deployments = [
        d
        for d in of_kind(docs, "Deployment")
        if d["metadata"]["labels"]["app.kubernetes.io/component"] == "gateway"
    ]
    assert len(deployments) == 1
    return deployments[0]


def container(deployment: dict, name: str = "ltigate") -> dict:
    for c in deployment["spec"]["template"]["spec"]["containers"]:
        if c["name"] == name:
            return c
    raise AssertionError(f"no container {name}")


def config_toml(docs: list[dict]) -> str:
    return one(docs, "ConfigMap")["data"]["ltigate.toml"]


def seconds(value) -> int:
    """Whole seconds of a duration as ltigate writes them ("25s", "2m", 30)."""
    if isinstance(value, int):
        return value
    total = 0.0
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}
    for number, unit in re.findall(r"(\d+)\s*([a-z]+)", value):
        total += int(number) * units[unit]
    return int(-(-total // 1))


def secret_volume(deployment: dict) -> dict:
    for v in deployment["spec"]["template"]["spec"]["volumes"]:
        if v["name"] == "secrets":
            return v["secret"]
    raise AssertionError("no secrets volume")


def secret_material(docs: list[dict], values: dict) -> dict[str, str]:
    """Secret key → value the pods would see.

    From the rendered Secret; with secrets.existingSecret, made-up values of
    the right length for every key the pod spec references.
    """
    secrets = of_kind(docs, "Secret")
    if secrets:
        (secret,) = secrets
        return {k: base64.b64decode(v).decode() for k, v in secret["data"].items()}
    dep = gateway(docs)
    keys = [item["key"] for item in secret_volume(dep)["items"]]
    for env in container(dep).get("env", []):
        ref = env.get("valueFrom", {}).get("secretKeyRef")
        if ref:
            keys.append(ref["key"])
    material = {}
    for key in keys:
        if key == values["secrets"]["keys"].get("storeUrl"):
            material[key] = "redis://:fake-redis-password@redis.data.svc:6379/0"
        elif key == values["secrets"]["keys"].get("toolKey"):
            material[key] = TOOL_KEY.read_text()
        elif key == values["secrets"]["keys"].get("previousSessionKeys"):
            material[key] = "fake-previous-session-key-0123456789abcdef\n"
        else:
            material[key] = f"fake-{key}-".ljust(48, "x")
    return material


# A commented-out line of config/ltigate.toml that is a key (`# key = value`)
# or a table header (`# [courses.C-1]`), as opposed to prose.
COMMENTED_KEY = re.compile(r"# ?((?:\[\[?[A-Za-z0-9_.-]+\]\]?|[a-z_]+ = .*?)\s*(?:#.*)?)")


def reference_text() -> str:
    """config/ltigate.toml with every commented-out key line put back."""
    lines = []
    for line in REFERENCE.read_text().splitlines():
        match = COMMENTED_KEY.fullmatch(line)
        if match:
            try:
                tomllib.loads(match.group(1))
                line = match.group(1)
            except tomllib.TOMLDecodeError:
                pass  # prose that happens to start like a key
        lines.append(line)
    return "\n".join(lines) + "\n"


def reference() -> dict:
    """config/ltigate.toml with its commented-out keys and tables put back."""
    return tomllib.loads(reference_text())


def reference_keys() -> set[str]:
    """Keys of config/ltigate.toml, commented-out ones included, `*_file` twins folded."""
    return flat_keys(reference())


def code_keys() -> set[str]:
    """section.key for every field of the Raw* structs of src/config/raw.rs (what
    ltigate accepts: they deny unknown fields and rename none)."""
    source = RAW_CONFIG.read_text()
    assert not re.search(r"serde\([^)]*\b(rename\w*|alias|flatten)\b", source), "a renamed field: read its key by hand"
    structs = dict(re.findall(r"(?m)^pub struct (Raw\w+) \{\n(.*?)^\}", source, re.S))
    sections = re.findall(r"(?m)^    pub (\w+): (?:Vec<|BTreeMap<String, )?(Raw\w+)>?,$", structs["RawConfig"])
    keys = set()
    for section, struct in sections:
        fields = re.findall(r"(?m)^    pub (\w+):", structs[struct])
        assert fields, f"no fields found in {struct}"
        keys |= {f"{section}.{field}" for field in fields}
    assert {s for s, _ in sections} >= {"server", "upstream", "session", "store", "consumers", "courses"}
    return keys


def test_reference_lists_every_key_the_code_accepts():
    """config/ltigate.toml names every key (as a value or as `# key = value`)
    and nothing ltigate would reject."""
    listed = flat_keys(reference(), fold=False)
    missing = code_keys() - listed
    assert not missing, f"keys missing from config/ltigate.toml: {sorted(missing)}"
    unknown = listed - code_keys()
    assert not unknown, f"keys in config/ltigate.toml that ltigate rejects: {sorted(unknown)}"


def test_check_config_knows_every_reference_key(tmp_path):
    """ltigate itself takes every key of the reference (the values may clash:
    a secret and its file both set; unknown keys are what it must not find)."""
    full = tmp_path / "full.toml"
    full.write_text(reference_text())
    result = check_config(full, {}, tmp_path)
    assert "unknown key" not in result.stdout + result.stderr, result.stderr
    typo = tmp_path / "typo.toml"
    typo.write_text(reference_text().replace("\ncookie_name =", "\ncookie_nam =", 1))
    result = check_config(typo, {}, tmp_path)
    assert result.returncode != 0
    assert "unknown key session.cookie_nam" in result.stderr


def flat_keys(config: dict, fold: bool = True) -> set[str]:
    """section.key for every key, consumers.*, platforms.* and courses.* folded,
    `_file` removed (unless not `fold`)."""
    keys = set()
    for section, body in config.items():
        assert isinstance(body, (dict, list)), f"{section} is not a table"
        if section in ("consumers", "platforms"):
            entries = body
        elif section == "courses":
            entries = list(body.values())
        else:
            entries = [body]
        for entry in entries:
            for key in entry:
                keys.add(f"{section}.{key.removesuffix('_file') if fold else key}")
    return keys


def ltigate_bin() -> Path:
    path = Path(os.environ.get("LTIGATE_BIN", "target/debug/ltigate"))
    if not path.is_absolute():
        path = REPO / path
    if not path.is_file():
        message = f"ltigate binary not found at {path} (build it, or set LTIGATE_BIN)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return path


def materialise(docs: list[dict], values: dict, root: Path) -> tuple[Path, dict, dict]:
    """Writes what the pod would see under `root`: ltigate.toml (mount paths
    rewritten into `root`) and the Secret's files. Returns the config path, the
    container's environment and the secret material."""
    dep = gateway(docs)
    material = secret_material(docs, values)
    secret_dir = root / "secrets"
    data_dir = root / "data"
    secret_dir.mkdir()
    data_dir.mkdir()
    for item in secret_volume(dep)["items"]:
        (secret_dir / item["path"]).write_text(material[item["key"]])
    text = config_toml(docs).replace(SECRET_DIR, str(secret_dir)).replace(DATA_DIR, str(data_dir))
    config = root / "ltigate.toml"
    config.write_text(text)
    env = {}
    for e in container(dep).get("env", []):
        if "value" in e:
            env[e["name"]] = e["value"]
        else:
            env[e["name"]] = material[e["valueFrom"]["secretKeyRef"]["key"]]
    return config, env, material


def check_config(config: Path, env: dict, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(ltigate_bin()), "check-config", "--config", str(config)],
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), **env},
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
    )


def kube_versions() -> list[str]:
    """The oldest Kubernetes the chart supports and the newest with schemas."""
    floor = re.search(r"(\d+\.\d+)", chart().metadata["kubeVersion"]).group(1)
    return [floor, kubernetes_validate.latest_version()]


# ---------------------------------------------------------------------------
# The ci values files: render, lint, validate
# ---------------------------------------------------------------------------


def test_every_feature_has_a_ci_values_file():
    assert FEATURES <= set(CI_IDS), f"missing: {FEATURES - set(CI_IDS)}"


def test_lint_default_values():
    report = helm.lint(CHART, strict=True, namespace=NAMESPACE)
    assert not report["errors"], report
    assert all(m["severity"] < 2 for m in report["messages"]), report


@pytest.mark.parametrize("name", CI_IDS)
def test_lint(name):
    report = helm.lint(CHART, load_values(CI_DIR / f"{name}-values.yaml"), strict=True, namespace=NAMESPACE)
    assert not report["errors"], report
    assert all(m["severity"] < 2 for m in report["messages"]), report


@pytest.mark.parametrize("name", CI_IDS)
def test_schema_accepts(name):
    chart().validate_schema(load_values(CI_DIR / f"{name}-values.yaml"))


@pytest.mark.parametrize("name", CI_IDS)
def test_manifests_are_valid_kubernetes(name):
    docs = rendered(name)
    assert docs
    for doc in docs:
        if doc["kind"] == "ServiceMonitor":
            check_service_monitor(doc, docs)
            continue
        for version in kube_versions():
            try:
                kubernetes_validate.validate(doc, version, strict=True)
            except kubernetes_validate.ValidationError as e:
                path = ".".join(str(p) for p in e.path)
                pytest.fail(f"{doc['kind']}/{doc['metadata']['name']} on {version}: {path}: {e.message}")
        assert doc["metadata"].get("namespace", NAMESPACE) == NAMESPACE or doc["kind"] == "ServiceMonitor"


def check_service_monitor(sm: dict, docs: list[dict]) -> None:
    """No Kubernetes schema covers the Prometheus Operator's CRD: check the
    shape and that it selects the admin Service's admin port."""
    assert sm["apiVersion"] == "monitoring.coreos.com/v1"
    assert set(sm) <= {"apiVersion", "kind", "metadata", "spec"}
    assert set(sm["spec"]) <= {"namespaceSelector", "selector", "endpoints"}
    admin = admin_service(docs)
    labels = admin["metadata"]["labels"]
    assert sm["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert sm["spec"]["namespaceSelector"]["matchNames"] == [NAMESPACE]
    public = public_service(docs)
    assert not sm["spec"]["selector"]["matchLabels"].items() <= public["metadata"]["labels"].items()
    (endpoint,) = sm["spec"]["endpoints"]
    assert endpoint["port"] == "admin" and endpoint["path"] == "/metrics"
    assert set(endpoint) <= {"port", "path", "scheme", "interval", "scrapeTimeout", "relabelings", "metricRelabelings"}


# ---------------------------------------------------------------------------
# The configuration
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", CI_IDS)
def test_config_uses_only_reference_keys(name):
    config = tomllib.loads(config_toml(rendered(name)))
    unknown = flat_keys(config) - reference_keys()
    assert not unknown, f"keys not in config/ltigate.toml: {unknown}"


def test_schema_config_keys_are_the_reference_keys():
    """values.schema.json's `config` knows every key of the reference, except
    those the chart sets itself."""
    schema = chart().schema["properties"]["config"]["properties"]
    keys = set()
    for section, body in schema.items():
        if section in ("consumers", "platforms"):
            props = body["items"]["properties"]
        elif section == "courses":
            props = body["additionalProperties"]["properties"]
        else:
            props = body["properties"]
        keys |= {f"{section}.{k}" for k in props}
    assert keys | CHART_MANAGED == reference_keys()
    assert not keys & CHART_MANAGED


@pytest.mark.parametrize("name", CI_IDS)
def test_config_is_wired_to_the_pod(name):
    docs = rendered(name)
    config = tomllib.loads(config_toml(docs))
    dep = gateway(docs)
    c = container(dep)
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert config["server"]["listen"] == f"0.0.0.0:{ports['http']}"
    assert config["server"]["admin_listen"] == f"0.0.0.0:{ports['admin']}"
    assert c["args"] == ["serve", "--config", CONFIG_PATH]
    mounts = {m["name"]: m for m in c["volumeMounts"]}
    assert mounts["config"]["mountPath"] == os.path.dirname(CONFIG_PATH)
    assert mounts["secrets"]["mountPath"] == SECRET_DIR

    # Every *_file names a key the secrets volume projects, and nothing else is projected.
    files = []
    for section, body in config.items():
        entries = body if isinstance(body, list) else [body]
        for entry in entries:
            files += [v for k, v in entry.items() if k.endswith("_file")]
    items = {f"{SECRET_DIR}/{i['path']}" for i in secret_volume(dep)["items"]}
    assert set(files) == items
    assert len(files) == len(set(files))
    assert "secret_file" in config["session"], "the chart always provides the session key"
    for consumer in config.get("consumers", []):
        assert consumer["secret_file"].startswith(SECRET_DIR + "/")

    if "path" in config["store"]:
        assert config["store"]["path"].startswith(DATA_DIR + "/")
        assert mounts["data"]["mountPath"] == DATA_DIR
    else:
        env = {e["name"] for e in c.get("env", [])}
        assert config["store"].get("url") or "LTIGATE_STORE__URL" in env


@pytest.mark.parametrize("name", CI_IDS)
def test_no_secret_value_in_a_configmap(name):
    docs = rendered(name)
    values = load_values(CI_DIR / f"{name}-values.yaml")
    material = secret_material(docs, values)
    given = [v for v in values.get("secrets", {}).values() if isinstance(v, str)]
    given += list(values.get("secrets", {}).get("consumers", {}).values())
    given += values.get("secrets", {}).get("previousSessionKeys", [])
    needles = {s.strip() for s in list(material.values()) + given if len(s.strip()) >= 8}
    needles.discard(values.get("secrets", {}).get("existingSecret", ""))
    for cm in of_kind(docs, "ConfigMap"):
        blob = json.dumps(cm)
        for needle in needles:
            assert needle not in blob, f"a secret value is in ConfigMap {cm['metadata']['name']}"
    config = tomllib.loads(config_toml(docs))
    for section, body in config.items():
        for entry in body if isinstance(body, list) else [body]:
            assert not SECRET_KEYS & set(entry), f"inline secret in [{section}]"


@pytest.mark.parametrize("name", CI_IDS)
def test_check_config_accepts_the_rendered_config(name, tmp_path):
    docs = rendered(name)
    values = load_values(CI_DIR / f"{name}-values.yaml")
    config, env, material = materialise(docs, values, tmp_path)
    result = check_config(config, env, tmp_path)
    assert result.returncode == 0, f"check-config failed:\n{result.stdout}\n{result.stderr}"
    for value in material.values():
        for line in value.splitlines():
            if len(line) >= 8:
                assert line not in result.stdout + result.stderr, "check-config printed a secret"


def test_check_config_reads_the_mounted_secret_files(tmp_path):
    """The *_file references are real: without the session key file the same
    configuration is refused."""
    docs = rendered("standalone")
    values = load_values(CI_DIR / "standalone-values.yaml")
    config, env, _ = materialise(docs, values, tmp_path)
    (tmp_path / "secrets" / "session-key").unlink()
    result = check_config(config, env, tmp_path)
    assert result.returncode != 0
    assert "session" in result.stdout + result.stderr


def test_a_consumer_secret_rotation_is_one_secret_a_line(tmp_path):
    """secrets.consumers.<key> as a list: the mounted file holds them newest
    first, one a line, which ltigate reads as a rotation."""
    values = merged(
        load_values(CI_DIR / "standalone-values.yaml"),
        {"secrets": {"consumers": {"acme-moodle": ["ci-consumer-secret-new", "ci-consumer-secret-old"]}}},
    )
    docs = render(values)
    config, env, material = materialise(docs, values, tmp_path)
    assert material["consumer-acme-moodle"] == "ci-consumer-secret-new\nci-consumer-secret-old"
    result = check_config(config, env, tmp_path)
    assert result.returncode == 0, f"check-config failed:\n{result.stdout}\n{result.stderr}"


# ---------------------------------------------------------------------------
# The pod
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", CI_IDS)
def test_pod_is_hardened_and_drains(name):
    docs = rendered(name)
    dep = gateway(docs)
    pod = dep["spec"]["template"]["spec"]
    c = container(dep)
    assert pod["enableServiceLinks"] is False
    assert pod["automountServiceAccountToken"] is False
    assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    sc = c["securityContext"]
    assert sc["runAsNonRoot"] is True and sc["runAsUser"] != 0
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"]["drop"] == ["ALL"]

    # Writable: only the embedded store's volume, which is a PVC.
    volumes = {v["name"]: v for v in pod["volumes"]}
    for m in c["volumeMounts"]:
        if m["name"] == "data":
            assert "persistentVolumeClaim" in volumes["data"]
        else:
            assert m.get("readOnly") is True, m
    assert not any("emptyDir" in v for v in volumes.values())
    assert secret_volume(dep)["defaultMode"] == 0o440

    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "admin"}
    assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "admin"}

    config = tomllib.loads(config_toml(docs))
    pause = c["lifecycle"]["preStop"]["sleep"]["seconds"]
    assert pause > 0
    grace = seconds(config["server"].get("shutdown_grace", "25s"))
    delivery = seconds(config.get("outcomes", {}).get("timeout", "30s"))
    assert pod["terminationGracePeriodSeconds"] >= pause + max(grace, delivery) + 5

    annotations = dep["spec"]["template"]["metadata"]["annotations"]
    assert re.fullmatch(r"[0-9a-f]{64}", annotations["checksum/config"])
    if of_kind(docs, "Secret"):
        assert re.fullmatch(r"[0-9a-f]{64}", annotations["checksum/secret"])

    spread = pod["topologySpreadConstraints"]
    labels = dep["spec"]["template"]["metadata"]["labels"]
    assert {s["topologyKey"] for s in spread} >= {"kubernetes.io/hostname", "topology.kubernetes.io/zone"}
    for s in spread:
        assert s["labelSelector"]["matchLabels"].items() <= labels.items()


def test_a_config_change_rolls_the_pods():
    base = load_values(CI_DIR / "standalone-values.yaml")

    def annotations(values):
        return gateway(render(values))["spec"]["template"]["metadata"]["annotations"]

    before = annotations(base)
    config_changed = annotations(merged(base, {"config": {"session": {"ttl": "4h"}}}))
    secret_changed = annotations(merged(base, {"secrets": {"webhookSecret": "another-webhook-secret-0123"}}))
    assert config_changed["checksum/config"] != before["checksum/config"]
    assert config_changed["checksum/secret"] == before["checksum/secret"]
    assert secret_changed["checksum/secret"] != before["checksum/secret"]


@pytest.mark.parametrize("name", CI_IDS)
def test_store_and_rollout(name):
    docs = rendered(name)
    dep = gateway(docs)
    config = tomllib.loads(config_toml(docs))
    strategy = dep["spec"]["strategy"]
    if "path" in config["store"]:
        # Embedded: one pod, its database on a PVC, never two pods at once.
        assert dep["spec"]["replicas"] == 1
        assert strategy == {"type": "Recreate"}
        assert not of_kind(docs, "HorizontalPodAutoscaler")
        claim = {v["name"]: v for v in dep["spec"]["template"]["spec"]["volumes"]}["data"]
        pvc = one([d for d in docs if d["metadata"]["name"].startswith(f"{RELEASE}-ltigate")], "PersistentVolumeClaim")
        assert claim["persistentVolumeClaim"]["claimName"] == pvc["metadata"]["name"]
    else:
        assert strategy["type"] == "RollingUpdate"
        assert strategy["rollingUpdate"]["maxUnavailable"] == 0
        assert "data" not in {v["name"] for v in dep["spec"]["template"]["spec"]["volumes"]}


@pytest.mark.parametrize("name", CI_IDS)
def test_disruption_budget_only_with_several_replicas(name):
    docs = rendered(name)
    dep = gateway(docs)
    hpa = of_kind(docs, "HorizontalPodAutoscaler")
    replicas = hpa[0]["spec"]["minReplicas"] if hpa else dep["spec"]["replicas"]
    pdbs = of_kind(docs, "PodDisruptionBudget")
    if replicas > 1:
        (pdb,) = pdbs
        labels = dep["spec"]["template"]["metadata"]["labels"]
        assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
    else:
        assert not pdbs
    if hpa:
        assert "replicas" not in dep["spec"]
        assert hpa[0]["spec"]["scaleTargetRef"]["name"] == dep["metadata"]["name"]


# ---------------------------------------------------------------------------
# Services, Ingress, metrics, NetworkPolicy
# ---------------------------------------------------------------------------


def public_service(docs):
    return next(d for d in of_kind(docs, "Service") if d["metadata"]["name"] == f"{RELEASE}-ltigate")


def admin_service(docs):
    return next(d for d in of_kind(docs, "Service") if d["metadata"]["name"] == f"{RELEASE}-ltigate-admin")


@pytest.mark.parametrize("name", CI_IDS)
def test_services(name):
    docs = rendered(name)
    dep = gateway(docs)
    pod_labels = dep["spec"]["template"]["metadata"]["labels"]
    public, admin = public_service(docs), admin_service(docs)
    assert [p["targetPort"] for p in public["spec"]["ports"]] == ["http"]
    assert admin["spec"]["type"] == "ClusterIP"
    assert [p["targetPort"] for p in admin["spec"]["ports"]] == ["admin"]
    for svc in (public, admin):
        assert svc["spec"]["selector"].items() <= pod_labels.items()
    for other in of_kind(docs, "Deployment"):
        if other is not dep:
            other_labels = other["spec"]["template"]["metadata"]["labels"]
            assert not public["spec"]["selector"].items() <= other_labels.items()


@pytest.mark.parametrize("name", CI_IDS)
def test_admin_port_is_never_behind_the_ingress(name):
    docs = rendered(name)
    public, admin = public_service(docs), admin_service(docs)
    for ingress in of_kind(docs, "Ingress"):
        assert "defaultBackend" not in ingress["spec"]
        for rule in ingress["spec"]["rules"]:
            for path in rule["http"]["paths"]:
                svc = path["backend"]["service"]
                assert svc["name"] == public["metadata"]["name"] != admin["metadata"]["name"]
                port = svc["port"].get("name", svc["port"].get("number"))
                assert port in ("http", public["spec"]["ports"][0]["port"])


def test_ingress_host_comes_from_public_url():
    docs = rendered("ingress")
    ingress = one(docs, "Ingress")
    (rule,) = ingress["spec"]["rules"]
    assert rule["host"] == "learn.example.com"
    assert rule["http"]["paths"][0]["path"] == "/"
    assert ingress["spec"]["tls"][0]["hosts"] == ["learn.example.com"]


@pytest.mark.parametrize("name", CI_IDS)
def test_metrics_scraping(name):
    docs = rendered(name)
    annotations = gateway(docs)["spec"]["template"]["metadata"]["annotations"]
    monitors = of_kind(docs, "ServiceMonitor")
    if monitors:
        assert "prometheus.io/scrape" not in annotations
    else:
        assert annotations["prometheus.io/scrape"] == "true"
        assert annotations["prometheus.io/path"] == "/metrics"
        admin_port = next(p for p in container(gateway(docs))["ports"] if p["name"] == "admin")
        assert annotations["prometheus.io/port"] == str(admin_port["containerPort"])


def test_network_policy():
    docs = rendered("networkpolicy")
    policies = {p["metadata"]["name"]: p for p in of_kind(docs, "NetworkPolicy")}
    gate = policies[f"{RELEASE}-ltigate"]
    pod_labels = gateway(docs)["spec"]["template"]["metadata"]["labels"]
    assert gate["spec"]["podSelector"]["matchLabels"].items() <= pod_labels.items()
    rules = {r["ports"][0]["port"]: r for r in gate["spec"]["ingress"]}
    assert set(rules) == {"http", "admin"}, "no other port of the pod is reachable"
    assert rules["admin"]["from"], "the admin port is open to listed peers only"
    assert gate["spec"]["policyTypes"] == ["Ingress", "Egress"]
    redis = policies[f"{RELEASE}-ltigate-redis"]
    (rule,) = redis["spec"]["ingress"]
    (peer,) = rule["from"]
    assert peer["podSelector"]["matchLabels"].items() <= pod_labels.items()


def test_trial_redis():
    docs = rendered("redis-enabled")
    redis = next(d for d in of_kind(docs, "Deployment") if d["metadata"]["name"] == f"{RELEASE}-ltigate-redis")
    args = redis["spec"]["template"]["spec"]["containers"][0]["args"]
    pairs = dict(zip(args[::2], args[1::2]))
    assert pairs["--appendonly"] == "yes"
    assert pairs["--maxmemory-policy"] == "noeviction"
    assert redis["spec"]["strategy"] == {"type": "Recreate"}
    config = tomllib.loads(config_toml(docs))
    svc = next(d for d in of_kind(docs, "Service") if d["metadata"]["name"] == f"{RELEASE}-ltigate-redis")
    assert config["store"]["url"] == f"redis://{svc['metadata']['name']}:{svc['spec']['ports'][0]['port']}"
    assert config["store"]["timeout"] == "1500ms"


def test_sidecar_pod():
    docs = rendered("sidecar")
    dep = gateway(docs)
    names = [c["name"] for c in dep["spec"]["template"]["spec"]["containers"]]
    assert names == ["ltigate", "platform"]
    platform = container(dep, "platform")
    config = tomllib.loads(config_toml(docs))
    port = platform["ports"][0]["containerPort"]
    assert config["upstream"]["url"] == f"http://127.0.0.1:{port}"
    assert config["upstream"]["api_url"] == f"http://127.0.0.1:{port}/api"
    assert "preStop" in platform["lifecycle"]
    # The platform's port is not published by any Service.
    for svc in of_kind(docs, "Service"):
        assert all(p["targetPort"] != "platform" for p in svc["spec"]["ports"])


# ---------------------------------------------------------------------------
# Invalid values
# ---------------------------------------------------------------------------

SCHEMA_REJECTS = {
    "typo at the top": {"replicaCont": 2},
    "wrong type": {"replicaCount": "2"},
    "unknown mode": {"mode": "proxy"},
    "typo in a config key": {"config": {"server": {"public_ulr": "https://x.example"}}},
    "listener set by the chart": {"config": {"server": {"listen": "0.0.0.0:80"}}},
    "store path set by the chart": {"config": {"store": {"path": "/tmp/db"}}},
    "inline session secret": {"config": {"session": {"secret": "an-inline-session-secret-0123456789abcdef"}}},
    "inline api token": {"config": {"upstream": {"api_token": "inline-token"}}},
    "inline consumer secret": {
        "config": {"consumers": [{"name": "A", "key": "acme-moodle", "lms_id": "acme", "secret": "inline"}]}
    },
    "credentials in store.url": {"config": {"store": {"url": "redis://:hunter2@redis:6379"}}},
    "not a Redis URL": {"config": {"store": {"url": "http://redis:6379"}}},
    "bad duration": {"config": {"upstream": {"timeout": "soon"}}},
    "bad size": {"config": {"webhook": {"max_body": "lots"}}},
    "zero connections": {"config": {"server": {"max_connections": 0}}},
    "short session key": {"secrets": {"sessionKey": "too-short"}},
    "short webhook secret": {"secrets": {"webhookSecret": "short"}},
    "consumer without lms_id": {"config": {"consumers": [{"name": "A", "key": "acme-moodle"}]}},
    "boolean as string": {"ingress": {"enabled": "yes"}},
    "unknown strategy": {"strategy": {"type": "BlueGreen"}},
    "platform named like ltigate": {"platform": {"name": "ltigate"}},
    "bad secret key name": {"secrets": {"keys": {"apiToken": "api token"}}},
    "consumer secret list with a newline": {"secrets": {"consumers": {"acme-moodle": ["a\nb"]}}},
    "empty consumer secret list": {"secrets": {"consumers": {"acme-moodle": []}}},
    "inline tool key": {"config": {"lti13": {"key": "-----BEGIN PRIVATE KEY-----"}}},
    "tool key files set by hand": {"config": {"lti13": {"next_key_files": ["/tmp/k.pem"]}}},
    "tool key that is no PEM": {"secrets": {"toolKey": "not a key"}},
    "assertion key that is no PEM": {"secrets": {"assertionKey": "not a key"}},
    "an RSA key as the assertion key": {"secrets": {"assertionKey": "-----BEGIN RSA PRIVATE KEY-----\nx"}},
    "inline assertion key": {"config": {"session": {"assertion_key": "-----BEGIN PRIVATE KEY-----"}}},
    "assertion key files set by hand": {"config": {"session": {"assertion_next_key_files": ["/tmp/k.pem"]}}},
    "assertion that is no boolean": {"config": {"session": {"assertion": "yes"}}},
    "platform without jwks_url": {
        "config": {
            "platforms": [
                {
                    "name": "P",
                    "issuer": "https://lms.example.org",
                    "client_id": "c",
                    "deployment_ids": ["1"],
                    "auth_login_url": "https://lms.example.org/auth",
                    "auth_token_url": "https://lms.example.org/token",
                    "lms_id": "p",
                }
            ]
        }
    },
    "platform without deployment ids": {
        "config": {
            "platforms": [
                {
                    "name": "P",
                    "issuer": "https://lms.example.org",
                    "client_id": "c",
                    "deployment_ids": [],
                    "auth_login_url": "https://lms.example.org/auth",
                    "auth_token_url": "https://lms.example.org/token",
                    "jwks_url": "https://lms.example.org/jwks",
                    "lms_id": "p",
                }
            ]
        }
    },
}

PLATFORM = {
    "name": "Acme Moodle 1.3",
    "issuer": "https://moodle.acme.edu",
    "client_id": "Xk3mP9",
    "deployment_ids": ["1"],
    "auth_login_url": "https://moodle.acme.edu/mod/lti/auth.php",
    "auth_token_url": "https://moodle.acme.edu/mod/lti/token.php",
    "jwks_url": "https://moodle.acme.edu/mod/lti/certs.php",
    "consumer": "Acme Moodle",
}


@pytest.mark.parametrize("override", SCHEMA_REJECTS.values(), ids=SCHEMA_REJECTS.keys())
def test_schema_rejects(override):
    values = merged(load_values(CI_DIR / "standalone-values.yaml"), override)
    with pytest.raises(helm.HelmValuesError):
        chart().validate_schema(values)
    with pytest.raises(helm.HelmValuesError):
        chart().render(values, name=RELEASE, namespace=NAMESPACE)


TEMPLATE_REJECTS = {
    "no public_url": ({"config": {"server": {"public_url": ""}}}, "config.server.public_url is required"),
    "embedded store with two replicas": ({"replicaCount": 2}, "one database file that one pod opens"),
    "embedded store without a volume": ({"persistence": {"enabled": False}}, "lost when the pod is rescheduled"),
    "embedded store rolling update": ({"strategy": {"type": "RollingUpdate"}}, "still holds the database"),
    "embedded store with autoscaling": ({"autoscaling": {"enabled": True}}, "autoscaling needs Redis"),
    "standalone without upstream": ({"config": {"upstream": {"url": None}}}, "config.upstream.url is required"),
    "standalone proxying to itself": (
        {"config": {"upstream": {"url": "http://127.0.0.1:3000"}}},
        "points at the ltigate pod itself",
    ),
    "sidecar without platform image": ({"mode": "sidecar"}, "platform.image.repository is required"),
    "sidecar port clash": (
        {"mode": "sidecar", "platform": {"image": {"repository": "web"}, "port": 8080}},
        "one of ltigate's ports",
    ),
    "no session key": ({"secrets": {"sessionKey": ""}}, "secrets.sessionKey is required"),
    "consumer without secret": ({"secrets": {"consumers": None}}, "has no secret"),
    "secret for no consumer": (
        {"secrets": {"consumers": {"acme-moodle": "x-secret-x", "ghost": "y-secret-y"}}},
        "names no consumer",
    ),
    "existing secret plus values": ({"secrets": {"existingSecret": "mine"}}, "together with secrets.existingSecret"),
    "trial redis plus store.url": (
        {"redis": {"enabled": True}, "config": {"store": {"url": "redis://redis:6379"}}},
        "not both",
    ),
    "trial redis as a cluster": ({"redis": {"enabled": True}, "config": {"store": {"cluster": True}}}, "single Redis node"),
    "platforms on Redis with an existing Secret without the tool key": (
        {
            "config": {"platforms": [PLATFORM], "store": {"url": "redis://redis.data.svc:6379"}},
            "secrets": {
                "existingSecret": "mine",
                "sessionKey": None,
                "webhookSecret": None,
                "apiToken": None,
                "consumers": None,
            },
        },
        "the chart generates one only in the Secret it creates",
    ),
    "assertion without an audience": (
        {"config": {"session": {"assertion": True}}},
        "config.session.assertion needs config.session.assertion_audience",
    ),
    "assertion on Redis with an existing Secret without its key": (
        {
            "config": {
                "session": {"assertion": True, "assertion_audience": "https://platform.internal/acme"},
                "store": {"url": "redis://redis.data.svc:6379"},
            },
            "secrets": {
                "existingSecret": "mine",
                "sessionKey": None,
                "webhookSecret": None,
                "apiToken": None,
                "consumers": None,
            },
        },
        "name its key with secrets.keys.assertionKey",
    ),
    "existing secret plus assertion key value": (
        {
            "secrets": {
                "existingSecret": "mine",
                "sessionKey": None,
                "webhookSecret": None,
                "apiToken": None,
                "consumers": None,
                "assertionKey": "-----BEGIN PRIVATE KEY-----\nx",
            }
        },
        "secrets.assertionKey is set together with secrets.existingSecret",
    ),
    "existing secret plus tool key value": (
        {
            "secrets": {
                "existingSecret": "mine",
                "sessionKey": None,
                "webhookSecret": None,
                "apiToken": None,
                "consumers": None,
                "toolKey": "-----BEGIN PRIVATE KEY-----\nx",
            }
        },
        "secrets.toolKey is set together with secrets.existingSecret",
    ),
}


def test_a_chart_created_tool_key_reaches_ltigate(tmp_path):
    """secrets.toolKey: mounted as a file, named by lti13.key_file, checked by
    ltigate (a PKCS#8 RSA key) and never printed."""
    values = merged(
        load_values(CI_DIR / "redis-enabled-values.yaml"),
        {"config": {"platforms": [PLATFORM]}, "secrets": {"toolKey": TOOL_KEY.read_text()}},
    )
    docs = render(values)
    config = tomllib.loads(config_toml(docs))
    assert config["lti13"]["key_file"] == f"{SECRET_DIR}/tool-key"
    assert config["platforms"][0]["consumer"] == "Acme Moodle"
    path, env, material = materialise(docs, values, tmp_path)
    assert material["tool-key"].startswith("-----BEGIN PRIVATE KEY-----")
    result = check_config(path, env, tmp_path)
    assert result.returncode == 0, f"check-config failed:\n{result.stdout}\n{result.stderr}"
    assert "BEGIN PRIVATE KEY" not in result.stdout + result.stderr


# ---------------------------------------------------------------------------
# The LTI 1.3 tool key: given, or generated and kept across upgrades
# ---------------------------------------------------------------------------


def with_platforms(*overrides: dict) -> dict:
    """redis-enabled-values.yaml with a platform and no tool key, then `overrides`."""
    values = merged(load_values(CI_DIR / "redis-enabled-values.yaml"), {"config": {"platforms": [PLATFORM]}})
    for override in overrides:
        values = merged(values, override)
    return values


def secret_data(docs: list[dict]) -> dict[str, str]:
    """The chart-created Secret's values, decoded."""
    return {k: base64.b64decode(v).decode() for k, v in one(docs, "Secret")["data"].items()}


def checksum(docs: list[dict]) -> str:
    return gateway(docs)["spec"]["template"]["metadata"]["annotations"]["checksum/secret"]


def manifests(text: str) -> list[dict]:
    """The documents of a rendered manifest stream."""
    return [doc for part in re.split(r"(?m)^---[ \t]*$", text) if (doc := yaml.safe_load(part))]


class FakeKubernetes:
    """The Kubernetes API as far as `helm install --dry-run=server` asks it,
    served on 127.0.0.1: discovery of the kinds the chart renders, an empty
    OpenAPI document (nothing to validate against), and GET of the Secrets it
    holds (404 for every other object). Helm renders with `lookup` answered
    here, and writes nothing: a server-side dry run only reads. An upgrade
    renders with `lookup` the same way, so what an install renders against a
    namespace holding the release's Secret is what an upgrade renders."""

    KINDS = {
        "v1": {
            "Secret": "secrets",
            "ConfigMap": "configmaps",
            "Service": "services",
            "ServiceAccount": "serviceaccounts",
            "PersistentVolumeClaim": "persistentvolumeclaims",
        },
        "apps/v1": {"Deployment": "deployments"},
        "policy/v1": {"PodDisruptionBudget": "poddisruptionbudgets"},
        "networking.k8s.io/v1": {"Ingress": "ingresses", "NetworkPolicy": "networkpolicies"},
        "autoscaling/v2": {"HorizontalPodAutoscaler": "horizontalpodautoscalers"},
        "monitoring.coreos.com/v1": {"ServiceMonitor": "servicemonitors"},
    }

    def __init__(self) -> None:
        self.secrets: dict[str, dict] = {}  # API path → Secret
        self.gets: list[str] = []
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def reply(self, status: int, body: object, content_type: str = "application/json") -> None:
                data = body if isinstance(body, bytes) else json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                path = self.path.split("?", 1)[0]
                fake.gets.append(path)
                status, body = fake.answer(path)
                # The OpenAPI v2 document is protobuf: empty bytes are an empty one.
                self.reply(status, body, "application/octet-stream" if body == b"" else "application/json")

            def refuse(self) -> None:
                self.reply(405, {"kind": "Status", "status": "Failure", "code": 405})

            do_POST = do_PUT = do_PATCH = do_DELETE = refuse

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def answer(self, path: str) -> tuple[int, object]:
        if path == "/version":
            return 200, {"major": "1", "minor": "31", "gitVersion": "v1.31.0", "platform": "linux/amd64"}
        if path == "/openapi/v2":
            return 200, b""
        if path == "/openapi/v3":
            return 200, {"paths": {}}
        if path == "/api":
            return 200, {"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": []}
        if path == "/apis":
            groups = []
            for gv in self.KINDS:
                if "/" in gv:
                    group, version = gv.split("/")
                    entry = {"groupVersion": gv, "version": version}
                    groups.append({"name": group, "versions": [entry], "preferredVersion": entry})
            return 200, {"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}
        for gv, kinds in self.KINDS.items():
            if path == ("/api/" if gv == "v1" else "/apis/") + gv:
                resources = [
                    {
                        "name": plural,
                        "singularName": kind.lower(),
                        "namespaced": True,
                        "kind": kind,
                        "verbs": ["get", "list", "create", "update", "patch", "delete"],
                    }
                    for kind, plural in kinds.items()
                ]
                return 200, {"kind": "APIResourceList", "groupVersion": gv, "resources": resources}
        if path in self.secrets:
            return 200, self.secrets[path]
        return 404, {"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound", "code": 404}

    def secret_path(self, name: str) -> str:
        return f"/api/v1/namespaces/{NAMESPACE}/secrets/{name}"

    def store(self, secret: dict) -> None:
        """Puts a rendered Secret in the namespace as an install leaves it,
        owned by the release."""
        secret = copy.deepcopy(secret)
        secret["metadata"].setdefault("annotations", {}).update(
            {"meta.helm.sh/release-name": RELEASE, "meta.helm.sh/release-namespace": NAMESPACE}
        )
        self.secrets[self.secret_path(secret["metadata"]["name"])] = secret

    def install(self, values: dict) -> list[dict]:
        """The manifests `helm install --dry-run=server` renders against this API."""
        kubeconfig = yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "fake", "cluster": {"server": f"http://127.0.0.1:{self.server.server_port}"}}],
                "users": [{"name": "fake", "user": {"token": "fake"}}],
                "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "fake", "namespace": NAMESPACE}}],
                "current-context": "fake",
            }
        )
        with helm.Config(kubeconfig_content=kubeconfig, namespace=NAMESPACE, storage_driver="memory") as cfg:
            release = cfg.install(chart(), RELEASE, values, namespace=NAMESPACE, dry_run="server")
        return manifests(release["manifest"])

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def kube():
    fake = FakeKubernetes()
    yield fake
    fake.close()


def test_without_a_tool_key_the_chart_generates_one(tmp_path):
    """config.platforms and no secrets.toolKey: the chart-created Secret holds
    an RSA key of Helm's genPrivateKey (PKCS#1 PEM), named by lti13.key_file
    and accepted by ltigate; the pods' checksum is that of this very Secret.
    Offline, as with `helm template`, there is no Secret to look up: every
    render makes a new key."""
    values = with_platforms()
    out = chart().render(values, name=RELEASE, namespace=NAMESPACE, is_install=True)
    (secret_text,) = [text for template, text in out.items() if template.endswith("/secret.yaml")]
    docs = [doc for template, text in sorted(out.items()) if not template.endswith("NOTES.txt") for doc in manifests(text)]
    key = secret_data(docs)["tool-key"]
    assert key.startswith("-----BEGIN RSA PRIVATE KEY-----\n")
    assert key.rstrip().endswith("-----END RSA PRIVATE KEY-----")
    assert checksum(docs) == hashlib.sha256(secret_text.encode()).hexdigest()
    assert tomllib.loads(config_toml(docs))["lti13"]["key_file"] == f"{SECRET_DIR}/tool-key"
    path, env, _ = materialise(docs, values, tmp_path)
    result = check_config(path, env, tmp_path)
    assert result.returncode == 0, f"check-config failed:\n{result.stdout}\n{result.stderr}"
    assert "PRIVATE KEY" not in result.stdout + result.stderr

    again = render(values)
    assert secret_data(again)["tool-key"] != key
    assert checksum(again) != checksum(docs)


def test_where_the_chart_generates_a_tool_key():
    """A key is generated for platforms on either store, into the Secret the
    chart creates only; without platforms there is nothing to sign."""
    embedded = merged(load_values(CI_DIR / "standalone-values.yaml"), {"config": {"platforms": [PLATFORM]}})
    docs = render(embedded)
    assert secret_data(docs)["tool-key"].startswith("-----BEGIN RSA PRIVATE KEY-----")
    assert tomllib.loads(config_toml(docs))["lti13"]["key_file"] == f"{SECRET_DIR}/tool-key"

    docs = render(load_values(CI_DIR / "redis-enabled-values.yaml"))
    assert "tool-key" not in secret_data(docs)
    assert "lti13" not in tomllib.loads(config_toml(docs))

    # An existing Secret on the embedded store without a tool key: nothing
    # generated, no key_file (ltigate runs without a configured key); on
    # Redis rendering fails instead (TEMPLATE_REJECTS).
    existing = load_values(CI_DIR / "existing-secret-values.yaml")
    docs = render(merged(existing, {"replicaCount": 1, "secrets": {"keys": {"storeUrl": "", "toolKey": ""}}}))
    assert not of_kind(docs, "Secret")
    assert "key_file" not in tomllib.loads(config_toml(docs)).get("lti13", {})


def test_a_generated_tool_key_is_kept_across_upgrades(kube):
    """Helm's `lookup`, answered by a Kubernetes API of the test's own: the
    install finds no Secret and generates a key; with that Secret in the
    namespace, the next render keeps its key, so the pods do not roll
    either, and a change elsewhere in the Secret keeps it too."""
    values = with_platforms()
    first = kube.install(values)
    secret = one(first, "Secret")
    assert kube.secret_path(secret["metadata"]["name"]) in kube.gets, "lookup did not ask the API"
    key = secret_data(first)["tool-key"]
    assert key.startswith("-----BEGIN RSA PRIVATE KEY-----")

    kube.store(secret)
    upgrade = kube.install(values)
    assert secret_data(upgrade)["tool-key"] == key
    assert checksum(upgrade) == checksum(first)
    changed = kube.install(merged(values, {"secrets": {"webhookSecret": "another-webhook-secret-0123"}}))
    assert secret_data(changed)["tool-key"] == key
    assert checksum(changed) != checksum(first)


def test_a_given_tool_key_is_used_as_given(kube, tmp_path):
    """secrets.toolKey is mounted as written, even when the release's Secret
    holds a generated key; PKCS#1 (as `openssl rsa -traditional` and
    genPrivateKey write it) passes the schema and ltigate."""
    values = with_platforms()
    kube.store(one(kube.install(values), "Secret"))
    given = TOOL_KEY_PKCS1.read_text()
    given_values = merged(values, {"secrets": {"toolKey": given}})
    docs = kube.install(given_values)
    assert secret_data(docs)["tool-key"] == given
    path, env, _ = materialise(docs, given_values, tmp_path)
    result = check_config(path, env, tmp_path)
    assert result.returncode == 0, f"check-config failed:\n{result.stdout}\n{result.stderr}"
    assert "PRIVATE KEY" not in result.stdout + result.stderr


# ---------------------------------------------------------------------------
# The signed identity assertion's key: given, or generated and kept across
# upgrades
# ---------------------------------------------------------------------------


def with_assertion(*overrides: dict) -> dict:
    """assertion-values.yaml (Redis, no key given), then `overrides`."""
    values = load_values(CI_DIR / "assertion-values.yaml")
    for override in overrides:
        values = merged(values, override)
    return values


def test_without_an_assertion_key_the_chart_generates_one(tmp_path):
    """config.session.assertion and no secrets.assertionKey: the chart-created
    Secret holds an EC P-256 key of Helm's genPrivateKey "ecdsa" (SEC1 PEM),
    named by session.assertion_key_file and accepted by ltigate on Redis,
    where a key is required; the pods' checksum is that of this very Secret.
    Offline every render makes a new key."""
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    values = with_assertion()
    out = chart().render(values, name=RELEASE, namespace=NAMESPACE, is_install=True)
    (secret_text,) = [text for template, text in out.items() if template.endswith("/secret.yaml")]
    docs = [doc for template, text in sorted(out.items()) if not template.endswith("NOTES.txt") for doc in manifests(text)]
    key = secret_data(docs)["assertion-key"]
    assert key.startswith("-----BEGIN EC PRIVATE KEY-----\n")
    private = load_pem_private_key(key.encode(), password=None)
    assert isinstance(private, ec.EllipticCurvePrivateKey) and private.curve.name == "secp256r1"
    assert checksum(docs) == hashlib.sha256(secret_text.encode()).hexdigest()
    session = tomllib.loads(config_toml(docs))["session"]
    assert session["assertion_key_file"] == f"{SECRET_DIR}/assertion-key"
    assert session["assertion"] is True
    assert session["assertion_audience"] == "https://platform.internal/acme"
    path, env, _ = materialise(docs, values, tmp_path)
    result = check_config(path, env, tmp_path)
    assert result.returncode == 0, f"check-config failed:\n{result.stdout}\n{result.stderr}"
    assert "PRIVATE KEY" not in result.stdout + result.stderr

    again = render(values)
    assert secret_data(again)["assertion-key"] != key
    assert checksum(again) != checksum(docs)

    # The notes say where the platform finds the key set.
    text = notes(values)
    assert f"http://{RELEASE}-ltigate-admin.{NAMESPACE}.svc:9090/.well-known/jwks.json" in text
    assert "(key assertion-key)" in text


def test_where_the_chart_generates_an_assertion_key():
    """Only with the assertion on, and only into the Secret the chart creates."""
    docs = render(load_values(CI_DIR / "redis-enabled-values.yaml"))
    assert "assertion-key" not in secret_data(docs)
    assert "assertion_key_file" not in tomllib.loads(config_toml(docs))["session"]
    embedded = merged(
        load_values(CI_DIR / "standalone-values.yaml"),
        {"config": {"session": {"assertion": True, "assertion_audience": "up"}}},
    )
    assert secret_data(render(embedded))["assertion-key"].startswith("-----BEGIN EC PRIVATE KEY-----")
    # An existing Secret on the embedded store without the key: nothing
    # generated, no key file (ltigate generates one beside its database).
    existing = load_values(CI_DIR / "existing-secret-values.yaml")
    docs = render(
        merged(
            existing,
            {
                "replicaCount": 1,
                "config": {"session": {"assertion": True, "assertion_audience": "up"}},
                "secrets": {"keys": {"storeUrl": "", "toolKey": ""}},
            },
        )
    )
    assert not of_kind(docs, "Secret")
    assert "assertion_key_file" not in tomllib.loads(config_toml(docs))["session"]
    # Named in an existing Secret: mounted and referenced.
    docs = render(
        merged(
            existing,
            {
                "config": {"session": {"assertion": True, "assertion_audience": "up"}},
                "secrets": {"keys": {"assertionKey": "assertion-signing-key"}},
            },
        )
    )
    items = {i["key"]: i["path"] for i in secret_volume(gateway(docs))["items"]}
    assert items["assertion-signing-key"] == "assertion-signing-key"
    assert tomllib.loads(config_toml(docs))["session"]["assertion_key_file"] == f"{SECRET_DIR}/assertion-signing-key"


def test_a_generated_assertion_key_is_kept_across_upgrades(kube):
    """The install generates a key; with the release's Secret in the namespace
    the next render keeps it (and the pods' checksum), also when another
    secret changes; the tool key's lookup and this one do not mix."""
    values = with_assertion({"config": {"platforms": [PLATFORM]}})
    first = kube.install(values)
    secret = one(first, "Secret")
    key = secret_data(first)["assertion-key"]
    tool_key = secret_data(first)["tool-key"]
    assert key.startswith("-----BEGIN EC PRIVATE KEY-----")
    kube.store(secret)
    upgrade = kube.install(values)
    assert secret_data(upgrade)["assertion-key"] == key
    assert secret_data(upgrade)["tool-key"] == tool_key
    assert checksum(upgrade) == checksum(first)
    changed = kube.install(merged(values, {"secrets": {"webhookSecret": "another-webhook-secret-0123"}}))
    assert secret_data(changed)["assertion-key"] == key
    assert checksum(changed) != checksum(first)


@pytest.mark.parametrize("given", [ASSERTION_KEY, ASSERTION_KEY_SEC1], ids=["pkcs8", "sec1"])
def test_a_given_assertion_key_is_used_as_given(kube, tmp_path, given):
    """secrets.assertionKey is mounted as written, even when the release's
    Secret holds a generated key; PKCS#8 and SEC1 pass the schema and
    ltigate."""
    values = with_assertion()
    kube.store(one(kube.install(values), "Secret"))
    given_values = merged(values, {"secrets": {"assertionKey": given.read_text()}})
    docs = kube.install(given_values)
    assert secret_data(docs)["assertion-key"] == given.read_text()
    path, env, _ = materialise(docs, given_values, tmp_path)
    result = check_config(path, env, tmp_path)
    assert result.returncode == 0, f"check-config failed:\n{result.stdout}\n{result.stderr}"
    assert "PRIVATE KEY" not in result.stdout + result.stderr
    assert "(key assertion-key)" not in notes(given_values)


@pytest.mark.parametrize("override,message", TEMPLATE_REJECTS.values(), ids=TEMPLATE_REJECTS.keys())
def test_template_rejects(override, message):
    values = merged(load_values(CI_DIR / "standalone-values.yaml"), override)
    with pytest.raises(helm.HelmRenderError) as raised:
        chart().render(values, name=RELEASE, namespace=NAMESPACE)
    assert message in str(raised.value)


def test_default_values_ask_for_public_url():
    with pytest.raises(helm.HelmRenderError, match="config.server.public_url is required"):
        chart().render({}, name=RELEASE, namespace=NAMESPACE)


# ---------------------------------------------------------------------------
# Documentation
# ---------------------------------------------------------------------------


# Values passed through to the pod spec as written: documented as a whole.
KUBERNETES_OBJECTS = {
    "resources",
    "redis.resources",
    "podSecurityContext",
    "securityContext",
    "livenessProbe",
    "readinessProbe",
}


def value_paths(values: dict, prefix: str = "") -> list[str]:
    paths = []
    for key, value in values.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict) and value and path not in KUBERNETES_OBJECTS:
            paths += value_paths(value, path + ".")
        else:
            paths.append(path)
    return paths


def test_every_value_is_documented():
    defaults = yaml.safe_load((CHART / "values.yaml").read_text())
    readme = README.read_text()
    missing = [p for p in value_paths(defaults) if f"`{p}`" not in readme]
    assert not missing, f"values not in README.md: {missing}"


def test_readme_installs_both_modes():
    readme = README.read_text()
    assert "helm install" in readme
    for mode in ("mode: standalone", "mode: sidecar"):
        assert mode in readme
    for setting in ("maxmemory-policy noeviction", "appendonly yes"):
        assert setting in readme


def notes(values: dict) -> str:
    out = chart().render(values, name=RELEASE, namespace=NAMESPACE, is_install=True)
    (text,) = [t for template, t in out.items() if template.endswith("NOTES.txt")]
    return text


def test_notes_say_how_to_get_the_image():
    """No registry publishes the default image: the notes say how to build and
    push it, until image.repository names a registry."""
    base = load_values(CI_DIR / "standalone-values.yaml")
    text = notes(base)
    assert f"{chart().metadata['appVersion']} is published in no registry" in text
    for step in (
        "docker build -t REGISTRY/ltigate:",
        "docker push REGISTRY/ltigate:",
        "--set image.repository=REGISTRY/ltigate",
    ):
        assert step in text
    pushed = notes(merged(base, {"image": {"repository": "registry.example.com/ltigate"}}))
    assert "docker build" not in pushed
    assert "LMS launch URL:" in pushed


def test_readme_says_how_to_build_the_image():
    section = README.read_text().split("## Container image", 1)[1].split("\n## ", 1)[0]
    for step in ("docker build -t", "podman build", "docker push", "--set image.repository=", "scripts/image-local"):
        assert step in section
    assert (REPO / "scripts" / "image-local").is_file()
