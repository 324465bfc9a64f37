"""deploy/: the Kubernetes manifests pass the Kubernetes API schemas (kubernetes-validate, offline), their
settings load with each process's own config loader, and the systemd units pass ``systemd-analyze verify``."""

from __future__ import annotations

import configparser
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
K8S = ROOT / "deploy" / "kubernetes"
SYSTEMD = ROOT / "deploy" / "systemd"
# The oldest Kubernetes the manifests support (the preStop `sleep` action is on by default from 1.30), and
# the newest the validator knows.
K8S_VERSIONS = ("1.30.0", "latest")
COMPONENTS = ("serve", "consume", "horizon")


def _documents() -> list[tuple[str, dict[str, Any]]]:
    docs = []
    for path in sorted(K8S.glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")):
            if doc:
                docs.append((path.name, doc))
    return docs


def _by_kind(kind: str) -> dict[str, dict[str, Any]]:
    return {doc["metadata"]["name"]: doc for _, doc in _documents() if doc["kind"] == kind}


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_manifests_pass_the_kubernetes_schemas(version: str) -> None:
    import kubernetes_validate

    if version == "latest":
        version = kubernetes_validate.latest_version()
    docs = _documents()
    assert {d["kind"] for _, d in docs} >= {
        "Deployment",
        "Service",
        "ConfigMap",
        "HorizontalPodAutoscaler",
    }
    for name, doc in docs:
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{name}: {doc['kind']} {doc['metadata']['name']}: {exc.message} at {list(exc.path)}")


def test_the_validator_rejects_a_broken_manifest() -> None:
    import kubernetes_validate

    deployment = _by_kind("Deployment")["ofs-serve"]
    broken = yaml.safe_load(yaml.safe_dump(deployment))
    broken["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["grpc"]["prot"] = 8089
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, kubernetes_validate.latest_version(), strict=True)


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not installed")
def test_kustomization_builds_into_valid_objects() -> None:
    import kubernetes_validate

    built = subprocess.run(
        ["kubectl", "kustomize", str(K8S)], capture_output=True, text=True, timeout=60, check=True
    ).stdout
    docs = [d for d in yaml.safe_load_all(built) if d]
    assert len(docs) == len(_documents())
    for doc in docs:
        assert doc["metadata"].get("namespace", "online-feature-store") == "online-feature-store"
        assert doc["metadata"]["labels"]["app.kubernetes.io/part-of"] == "online-feature-store"
        kubernetes_validate.validate(doc, kubernetes_validate.latest_version(), strict=True)


def test_kustomization_lists_every_manifest() -> None:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text(encoding="utf-8"))
    listed = set(kustomization["resources"])
    on_disk = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert listed == on_disk


def test_each_component_has_deployment_service_and_autoscaler() -> None:
    deployments = _by_kind("Deployment")
    services = _by_kind("Service")
    autoscalers = _by_kind("HorizontalPodAutoscaler")
    for component in COMPONENTS:
        name = f"ofs-{component}"
        assert name in deployments, name
        assert name in services, name
        assert name in autoscalers, name
        assert autoscalers[name]["spec"]["scaleTargetRef"]["name"] == name
        labels = deployments[name]["spec"]["template"]["metadata"]["labels"]
        assert deployments[name]["spec"]["selector"]["matchLabels"].items() <= labels.items()
        assert services[name]["spec"]["selector"].items() <= labels.items()


def test_replicated_components_spread_over_nodes_and_keep_a_disruption_budget() -> None:
    budgets = _by_kind("PodDisruptionBudget")
    for component in ("serve", "consume"):
        name = f"ofs-{component}"
        deployment = _by_kind("Deployment")[name]
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        spread = deployment["spec"]["template"]["spec"]["topologySpreadConstraints"]
        assert "kubernetes.io/hostname" in {c["topologyKey"] for c in spread}, name
        for constraint in spread:
            assert constraint["labelSelector"]["matchLabels"].items() <= labels.items(), name
        assert budgets[name]["spec"]["selector"]["matchLabels"].items() <= labels.items(), name
        # the budget never blocks every eviction of the replicas the autoscaler keeps at least
        floor = _by_kind("HorizontalPodAutoscaler")[name]["spec"]["minReplicas"]
        budget = budgets[name]["spec"]
        assert budget.get("maxUnavailable", 0) >= 1 or budget["minAvailable"] < floor, name


def _container_ports(container: dict[str, Any]) -> dict[Any, int]:
    ports: dict[Any, int] = {}
    for p in container.get("ports", []):
        ports[p["containerPort"]] = p["containerPort"]
        if "name" in p:
            ports[p["name"]] = p["containerPort"]
    return ports


def test_probes_and_scrape_annotations_point_at_declared_ports() -> None:
    for name, deployment in _by_kind("Deployment").items():
        pod = deployment["spec"]["template"]
        (container,) = pod["spec"]["containers"]
        ports = _container_ports(container)
        for probe in ("readinessProbe", "livenessProbe"):
            spec = container[probe]
            action = spec.get("grpc") or spec.get("httpGet")
            assert action is not None, f"{name}: {probe} is neither grpc nor httpGet"
            assert action["port"] in ports, f"{name}: {probe} port {action['port']} is not declared"
        if name == "ofs-horizon":
            continue  # Horizon serves no Prometheus metrics
        annotations = pod["metadata"]["annotations"]
        assert annotations["prometheus.io/scrape"] == "true"
        assert int(annotations["prometheus.io/port"]) in ports.values(), name
        assert annotations["prometheus.io/path"] == "/metrics"


def _configmap_settings() -> dict[str, Any]:
    (configmap,) = _by_kind("ConfigMap").values()
    return {key: yaml.safe_load(text) for key, text in configmap["data"].items()}


def test_configmap_settings_load_with_each_component_loader(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for var in [v for v in os.environ if v.startswith("OFS_")]:
        monkeypatch.delenv(var)
    settings = _configmap_settings()
    assert set(settings) == {f"{c}.yaml" for c in COMPONENTS}
    files = {}
    for key, doc in settings.items():
        files[key] = tmp_path / key
        files[key].write_text(yaml.safe_dump(doc), encoding="utf-8")

    from online_feature_store.server.main import load_config as serve_config

    config, extra = serve_config(str(files["serve.yaml"]), {})
    assert (config.host, config.port) == ("0.0.0.0", 8089)
    assert extra["registry"].startswith("etcd://")

    from online_feature_store.consumer.config import load_config as consume_config

    consumer, extra = consume_config(str(files["consume.yaml"]), {})
    assert consumer.health_port == 8090
    assert extra["registry"].startswith("etcd://")

    from online_feature_store.horizon.config import load_config as horizon_config

    horizon = horizon_config(str(files["horizon.yaml"]), env={})
    assert horizon.port == 8082
    assert horizon.serving_address == "ofs-serve:8089"


def test_deployments_run_each_component_with_its_config_file() -> None:
    mounted = set(_configmap_settings())
    for component in COMPONENTS:
        (container,) = _by_kind("Deployment")[f"ofs-{component}"]["spec"]["template"]["spec"]["containers"]
        command = container["command"]
        assert command[:2] == ["ofs", component]
        config = command[command.index("--config") + 1]
        assert Path(config).name in mounted


# ------------------------------------------------------------------------------------------- systemd ---


def _units() -> list[Path]:
    units = sorted(SYSTEMD.glob("*.service"))
    assert [u.name for u in units] == [f"online-feature-store-{c}.service" for c in sorted(COMPONENTS)]
    return units


def _exec_start(unit: Path) -> list[str]:
    parser = configparser.ConfigParser(strict=True, interpolation=None, delimiters=("=",))
    parser.optionxform = str  # type: ignore[assignment,method-assign]  # unit keys are case-sensitive
    parser.read(unit, encoding="utf-8")
    assert parser.sections() == ["Unit", "Service", "Install"], unit.name
    return parser["Service"]["ExecStart"].split()


def test_units_run_each_component_with_its_config_file() -> None:
    for unit in _units():
        component = unit.stem.removeprefix("online-feature-store-")
        argv = _exec_start(unit)
        assert Path(argv[0]).name == "ofs"
        assert argv[1] == component
        assert argv[argv.index("--config") + 1] == f"/etc/online-feature-store/{component}.yaml"


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")
def test_units_pass_systemd_analyze_verify(tmp_path: Path) -> None:
    # An alternate root holding the system's own units (targets the units depend on), ours, and an
    # executable where ExecStart points: verify then checks our files, not this machine's layout.
    system_units = next(
        p for p in (Path("/usr/lib/systemd/system"), Path("/lib/systemd/system")) if p.is_dir()
    )
    root = tmp_path / "root"
    shutil.copytree(system_units, root / "usr/lib/systemd/system", symlinks=True)
    (root / "etc/systemd/system").mkdir(parents=True)
    for unit in _units():
        shutil.copy(unit, root / "etc/systemd/system" / unit.name)
        binary = root / _exec_start(unit)[0].lstrip("/")
        binary.parent.mkdir(parents=True, exist_ok=True)
        binary.write_text("#!/bin/sh\nexit 0\n")
        binary.chmod(0o755)
    names = [u.name for u in _units()]
    proc = subprocess.run(
        ["systemd-analyze", "verify", f"--root={root}", "--man=no", "--generators=no", *names],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    # verify reports unknown keys and bad values as warnings with exit status 0: any output is a finding.
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert not (proc.stdout + proc.stderr).strip()
