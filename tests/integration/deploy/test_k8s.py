"""The Kubernetes manifests, Dockerfile and compose file, checked offline: built-in kinds
with kubernetes-validate --strict, the RayCluster against KubeRay's CRD schema (made
strict: unknown fields fail), and the security settings users rely on. The
object-storage overlay is built (its deletions, and its RFC 6902 patches applied with
``jsonpatch``; and by ``kubectl kustomize`` too where kubectl is installed) and its
output checked the same way."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml
from jsonschema import Draft7Validator

from tests.helpers import missing_tool

ROOT = Path(__file__).resolve().parents[3]
K8S = ROOT / "k8s"
BASE = K8S / "base"
OVERLAY = K8S / "object-storage"
DEPLOY = ROOT / "deploy"
BUILT_IN = ["namespace.yaml", "secret.yaml", "storage.yaml", "gateway.yaml", "networkpolicy.yaml"]
CHECKOV = ROOT / ".venv-tools" / "bin" / "checkov"


def docs(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def strict(schema: Any) -> Any:
    """The CRD schema with ``additionalProperties: false`` wherever it lists properties
    and does not say unknown fields are kept: a misspelt field then fails."""
    if isinstance(schema, dict):
        out = {k: strict(v) for k, v in schema.items()}
        keeps_unknown = out.get("x-kubernetes-preserve-unknown-fields")
        if "properties" in out and "additionalProperties" not in out and not keeps_unknown:
            out["additionalProperties"] = False
        return out
    if isinstance(schema, list):
        return [strict(v) for v in schema]
    return schema


def raycluster_schema() -> dict[str, Any]:
    [crd] = docs(K8S / "schemas" / "ray.io_rayclusters.yaml")
    [v1] = [v for v in crd["spec"]["versions"] if v["name"] == "v1"]
    return strict(v1["schema"]["openAPIV3Schema"])


def test_built_in_kinds_pass_kubernetes_validate_strict() -> None:
    done = subprocess.run(
        [str(Path(sys.executable).with_name("kubernetes-validate")), "--strict",
         *(str(BASE / f) for f in BUILT_IN)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    # namespace, secret, 2 PVCs, deployment, service, network policy
    assert done.stdout.count("passed") == 7, done.stdout


def test_raycluster_matches_the_kuberay_crd_and_a_typo_would_not() -> None:
    validator = Draft7Validator(raycluster_schema())
    [cluster] = docs(BASE / "raycluster.yaml")
    errors = [f"{'/'.join(map(str, e.path))}: {e.message}" for e in validator.iter_errors(cluster)]
    assert errors == []
    cluster["spec"]["enableInTreeAutoScaling"] = True  # misspelt
    assert not validator.is_valid(cluster)


def test_raycluster_shape() -> None:
    [cluster] = docs(BASE / "raycluster.yaml")
    spec = cluster["spec"]
    assert cluster["apiVersion"] == "ray.io/v1" and spec["enableInTreeAutoscaling"] is True
    assert spec["headGroupSpec"]["rayStartParams"]["num-cpus"] == "0"
    groups = {g["groupName"]: g for g in spec["workerGroupSpecs"]}
    gpu = groups["gpu-workers"]["template"]["spec"]["containers"][0]
    assert gpu["resources"]["limits"]["nvidia.com/gpu"] == "1"
    env = {e["name"]: e.get("value") for e in gpu["env"]}
    assert "video" in env["NVIDIA_DRIVER_CAPABILITIES"].split(",")
    assert "cpu-workers" in groups


def pod_specs() -> list[dict[str, Any]]:
    [cluster] = docs(BASE / "raycluster.yaml")
    pods = [cluster["spec"]["headGroupSpec"]["template"]["spec"]]
    pods += [g["template"]["spec"] for g in cluster["spec"]["workerGroupSpecs"]]
    pods += [
        d["spec"]["template"]["spec"]
        for d in docs(BASE / "gateway.yaml")
        if d["kind"] == "Deployment"
    ]
    return pods


def test_every_pod_is_non_root_unprivileged_and_capability_free() -> None:
    for pod in pod_specs():
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
        for c in pod["containers"]:
            sc = c["securityContext"]
            assert sc["allowPrivilegeEscalation"] is False and sc["capabilities"]["drop"] == ["ALL"]
            assert c["resources"]["requests"] and c["resources"]["limits"]


def test_gateway_probes_storage_secret_and_kustomization() -> None:
    [deployment] = [d for d in docs(BASE / "gateway.yaml") if d["kind"] == "Deployment"]
    [c] = deployment["spec"]["template"]["spec"]["containers"]
    assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert c["securityContext"]["readOnlyRootFilesystem"] is True
    secrets = {e["name"] for e in c["env"] if "valueFrom" in e}
    assert secrets == {"RAY_AUTH_TOKEN"}  # Ray reads it only from the environment
    env = {e["name"]: e.get("value") for e in c["env"]}
    mounts = {m["mountPath"] for m in c["volumeMounts"]}
    assert env["FRAMEFLEET_TOKEN_FILE"].rsplit("/", 1)[0] in mounts  # API tokens as a file
    claims = {d["metadata"]["name"]: d["spec"]["accessModes"] for d in docs(BASE / "storage.yaml")}
    assert claims["framefleet-media"] == ["ReadWriteMany"]
    kustomization = yaml.safe_load((BASE / "kustomization.yaml").read_text())
    listed = set(kustomization["resources"])
    assert listed == {p.name for p in BASE.glob("*.yaml")} - {"kustomization.yaml"}
    assert yaml.safe_load((K8S / "kustomization.yaml").read_text())["resources"] == ["base"]
    [monitor] = docs(BASE / "servicemonitor.yaml")
    assert monitor["spec"]["endpoints"][0]["path"] == "/metrics"


def test_dockerfile_runs_non_root_under_tini_with_nvenc_capabilities() -> None:
    text = (DEPLOY / "Dockerfile").read_text()
    assert 'ENTRYPOINT ["/usr/bin/tini", "--"]' in text and " tini " in text
    assert "USER 10001" in text and "NVIDIA_DRIVER_CAPABILITIES=compute,utility,video" in text
    assert "requirements.lock" in text and " ffmpeg " in text


def test_compose_file_parses_and_wires_the_farm() -> None:
    compose = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
    services = compose["services"]
    assert set(services) == {
        "ray-head",
        "gateway",
        "gpu-worker",
        "cpu-worker",
        "prometheus",
        "grafana",
    }
    assert all(
        services[s]["init"] is True for s in ("ray-head", "gateway", "gpu-worker", "cpu-worker")
    )
    gpu = services["gpu-worker"]["deploy"]["resources"]["reservations"]["devices"][0]
    assert gpu["driver"] == "nvidia" and "video" in gpu["capabilities"]
    mounts = " ".join(services["grafana"]["volumes"])
    assert "provisioning" in mounts and "/var/lib/grafana/dashboards" in mounts
    for volume in services["grafana"]["volumes"] + services["prometheus"]["volumes"]:
        assert (DEPLOY / volume.split(":")[0]).exists(), volume


def test_checkov_finds_nothing_unexplained() -> None:
    checkov(BASE)


def checkov(folder: Path) -> None:
    if not CHECKOV.exists():
        missing_tool(f"{CHECKOV} is missing; run `make setup` (it builds .venv-tools)")
    done = subprocess.run(
        [str(CHECKOV), "-d", str(folder), "--framework", "kubernetes", "--compact",
         "--skip-download", "-o", "json"],
        capture_output=True, text=True, check=False, timeout=300,
    )  # fmt: skip
    report = json.loads(done.stdout)
    results = report["results"]
    failed = [f"{c['check_id']} {c['resource']}" for c in results["failed_checks"]]
    assert failed == []
    skipped = {
        c["check_id"]: c["check_result"].get("suppress_comment", "")
        for c in results["skipped_checks"]
    }
    assert set(skipped) == {"CKV_K8S_43", "CKV_K8S_35"} and all(
        len(r) > 20 for r in skipped.values()
    )
    assert report["summary"]["passed"] >= 80


def build_overlay() -> list[dict[str, Any]]:
    """``k8s/object-storage`` built as kustomize builds it: the base's resources and its
    own, less what a ``$patch: delete`` names, with its RFC 6902 patches applied to their
    targets (``jsonpatch``: a ``test`` op that fails stops the build, as in kustomize)."""
    import jsonpatch

    spec = yaml.safe_load((OVERLAY / "kustomization.yaml").read_text())
    built: list[dict[str, Any]] = []
    for entry in spec["resources"]:
        where = (OVERLAY / entry).resolve()
        if where.is_dir():
            base = yaml.safe_load((where / "kustomization.yaml").read_text())
            built += [d for f in base["resources"] for d in docs(where / f)]
        else:
            built += docs(where)
    # YAML anchors (the base's `*rayEnv`) become copies, as in kustomize: not one shared list.
    built = [json.loads(json.dumps(d)) for d in built]
    for patch in spec["patches"]:
        body = yaml.safe_load((OVERLAY / patch["path"]).read_text())
        target = patch.get("target")
        if target is None:
            assert body.pop("$patch") == "delete"  # the only strategic merge used here
            gone = (body["kind"], body["metadata"]["name"])
            built = [d for d in built if (d["kind"], d["metadata"]["name"]) != gone]
            continue
        aimed = (target["kind"], target["name"])
        [i] = [n for n, d in enumerate(built) if (d["kind"], d["metadata"]["name"]) == aimed]
        built[i] = jsonpatch.apply_patch(built[i], body)
    return built


def by_kind(built: list[dict[str, Any]]) -> dict[tuple[str, str], dict[str, Any]]:
    return {(d["kind"], d["metadata"]["name"]): d for d in built}


def test_the_object_storage_overlay_needs_no_shared_volume(tmp_path: Path) -> None:
    built = by_kind(build_overlay())
    claims = {name: d["spec"]["accessModes"] for (kind, name), d in built.items()
              if kind == "PersistentVolumeClaim"}  # fmt: skip
    assert claims == {"framefleet-data": ["ReadWriteOnce"]}  # the job database only
    text = json.dumps(list(built.values()))
    assert 'framefleet-media"' not in text.replace("framefleet-media/", "")  # no claim left
    cluster = built[("RayCluster", "framefleet")]
    assert list(Draft7Validator(raycluster_schema()).iter_errors(cluster)) == []
    head = cluster["spec"]["headGroupSpec"]["template"]["spec"]
    workers = [g["template"]["spec"] for g in cluster["spec"]["workerGroupSpecs"]]
    for pod in [head, *workers]:
        [c] = pod["containers"]
        env = {e["name"]: e.get("value") for e in c["env"]}
        mounts = {m["name"]: m for m in c["volumeMounts"]}
        volumes = {v["name"]: v for v in pod["volumes"]}
        assert "media" not in mounts and "media" not in volumes
        assert env["AWS_SHARED_CREDENTIALS_FILE"] == "/run/secrets/aws/credentials"
        assert mounts["s3-credentials"]["readOnly"] is True
        assert volumes["s3-credentials"]["secret"]["secretName"] == "framefleet-s3"
    for pod in workers:
        [c] = pod["containers"]
        env = {e["name"]: e.get("value") for e in c["env"]}
        scratch = {v["name"]: v for v in pod["volumes"]}["scratch"]["emptyDir"]
        limit = int(scratch["sizeLimit"].removesuffix("Gi")) * 2**30
        assert env["FRAMEFLEET_SCRATCH"] == "/scratch"
        assert int(env["FRAMEFLEET_SCRATCH_BYTES"]) < limit  # jobs stay under the eviction line
    gateway = built[("Deployment", "framefleet-gateway")]["spec"]["template"]["spec"]
    [c] = gateway["containers"]
    env = {e["name"]: e.get("value") for e in c["env"]}
    assert env["FRAMEFLEET_MEDIA_ROOTS"].startswith("s3://")
    assert "AWS_SHARED_CREDENTIALS_FILE" not in env  # the gateway holds no S3 credentials
    assert {v["name"] for v in gateway["volumes"]} == {"api-tokens", "state", "tmp"}
    secret = built[("Secret", "framefleet-s3")]
    assert "aws_secret_access_key" in secret["stringData"]["credentials"]
    # Built-in kinds pass kubernetes-validate --strict; checkov on what would be applied.
    out = tmp_path / "built"
    out.mkdir()
    for (kind, name), d in built.items():
        (out / f"{kind.lower()}-{name}.yaml").write_text(yaml.safe_dump(d))
    builtin = [
        str(p) for p in out.iterdir() if not p.name.startswith(("raycluster", "servicemonitor"))
    ]
    done = subprocess.run(
        [str(Path(sys.executable).with_name("kubernetes-validate")), "--strict", *builtin],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    checkov(out)


def test_kubectl_kustomize_builds_the_overlay_the_same_way() -> None:
    kubectl = shutil.which("kubectl")
    if kubectl is None:  # an extra check where kubectl is installed; the build above stands
        return
    done = subprocess.run([kubectl, "kustomize", str(OVERLAY)], capture_output=True, text=True,
                          check=False, timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr
    theirs = by_kind([d for d in yaml.safe_load_all(done.stdout) if d])
    assert theirs == by_kind(build_overlay())
