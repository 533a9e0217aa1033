"""deploy/: every manifest is a valid Kubernetes object, its Corefiles build, its RBAC covers
exactly what dnsd asks the API server for, and the image and pods run with least privilege.

Schemas are kubernetes-validate's offline copies (strict: unknown fields are errors).  The two
non-Kubernetes kinds that may appear under deploy/ (Multus' NetworkAttachmentDefinition CRD and
kind's own cluster config) are checked against minimal schemas written here.  The RBAC check
runs dnsd against the API emulator and maps every request it made to (apiGroup, resource,
verb).
"""

from __future__ import annotations

import contextlib
import http.client
import json
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from typing import Any

import dns.rdatatype
import jsonschema
import kubernetes_validate
import pytest
import yaml
from support import ROOT, Dnsd, free_port, query

from dnsd.corefile import parse
from dnsd.devcluster import DevCluster
from dnsd.serve.runtime import Runtime

DEPLOY = ROOT / "deploy"
K8S_VERSIONS = ("1.29.0", kubernetes_validate.latest_version())  # 1.29: native sidecars on
NON_ROOT_UID = 65532
UNPRIVILEGED_PORTS = {"name": "net.ipv4.ip_unprivileged_port_start", "value": "0"}

Doc = dict[str, Any]


def documents() -> list[tuple[str, int, Doc]]:
    out = []
    for path in sorted([*DEPLOY.rglob("*.yaml"), *DEPLOY.rglob("*.yml")]):
        for i, doc in enumerate(yaml.safe_load_all(path.read_text())):
            if doc is not None:
                out.append((str(path.relative_to(DEPLOY)), i, doc))
    return out


DOCS = documents()


def find(kind: str, name: str, file: str | None = None) -> Doc:
    """The one object of that kind and name in ``file`` (default: outside the demo data)."""
    found = [d for f, _, d in DOCS
             if d.get("kind") == kind and d["metadata"]["name"] == name
             and (f == file if file is not None else not f.startswith("demo/"))]
    assert len(found) == 1, (kind, name, file, len(found))
    return found[0]


# --- schemas of the non-Kubernetes kinds --------------------------------------------------

_STRING_MAP = {"type": "object", "additionalProperties": {"type": "string"}}
_OBJECT_META = {
    "type": "object", "additionalProperties": False, "required": ["name"],
    "properties": {"name": {"type": "string", "pattern": r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"},
                   "namespace": {"type": "string"}, "labels": _STRING_MAP,
                   "annotations": _STRING_MAP},
}
# k8s.cni.cncf.io/v1 NetworkAttachmentDefinition, as its CRD (multus) defines it.
NAD_SCHEMA = {
    "type": "object", "additionalProperties": False, "required": ["apiVersion", "kind", "metadata"],
    "properties": {
        "apiVersion": {"const": "k8s.cni.cncf.io/v1"},
        "kind": {"const": "NetworkAttachmentDefinition"},
        "metadata": _OBJECT_META,
        "spec": {"type": "object", "additionalProperties": False,
                 "properties": {"config": {"type": "string"}}},
    },
}
# kind's cluster configuration (kind.x-k8s.io/v1alpha4 Cluster): the fields kind documents.
_KIND_NODE = {
    "type": "object", "additionalProperties": False, "required": ["role"],
    "properties": {
        "role": {"enum": ["control-plane", "worker"]}, "image": {"type": "string"},
        "labels": _STRING_MAP, "extraMounts": {"type": "array"},
        "extraPortMappings": {"type": "array"}, "kubeadmConfigPatches": {"type": "array"},
        "kubeadmConfigPatchesJSON6902": {"type": "array"},
    },
}
KIND_CLUSTER_SCHEMA = {
    "type": "object", "additionalProperties": False, "required": ["kind", "apiVersion"],
    "properties": {
        "kind": {"const": "Cluster"}, "apiVersion": {"const": "kind.x-k8s.io/v1alpha4"},
        "name": {"type": "string", "pattern": r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"},
        "nodes": {"type": "array", "items": _KIND_NODE, "minItems": 1},
        "networking": {
            "type": "object", "additionalProperties": False,
            "properties": {
                "ipFamily": {"enum": ["ipv4", "ipv6", "dual"]},
                "apiServerAddress": {"type": "string"}, "apiServerPort": {"type": "integer"},
                "podSubnet": {"type": "string"}, "serviceSubnet": {"type": "string"},
                "disableDefaultCNI": {"type": "boolean"},
                "kubeProxyMode": {"enum": ["iptables", "ipvs", "nftables", "none"]},
                "dnsSearch": {"type": "array", "items": {"type": "string"}},
            },
        },
        "featureGates": {"type": "object"}, "runtimeConfig": _STRING_MAP,
        "kubeadmConfigPatches": {"type": "array"}, "kubeadmConfigPatchesJSON6902": {"type": "array"},
        "containerdConfigPatches": {"type": "array"},
    },
}
OTHER_SCHEMAS = {
    ("k8s.cni.cncf.io/v1", "NetworkAttachmentDefinition"): NAD_SCHEMA,
    ("kind.x-k8s.io/v1alpha4", "Cluster"): KIND_CLUSTER_SCHEMA,
}


@pytest.mark.parametrize("file, index, doc", DOCS,
                         ids=[f"{f}#{i}-{d.get('kind')}" for f, i, d in DOCS])
def test_every_document_validates_offline(file: str, index: int, doc: Doc) -> None:
    schema = OTHER_SCHEMAS.get((doc.get("apiVersion"), doc.get("kind")))
    if schema is not None:
        jsonschema.validate(doc, schema)
        if doc["kind"] == "NetworkAttachmentDefinition" and "config" in doc.get("spec", {}):
            config = json.loads(doc["spec"]["config"])
            assert "cniVersion" in config and ("type" in config or "plugins" in config)
        return
    for version in K8S_VERSIONS:
        kubernetes_validate.validate(doc, version, strict=True)


def test_the_expected_manifests_exist() -> None:
    kinds = {(f, d["kind"], d["metadata"]["name"]) for f, _, d in DOCS if "metadata" in d}
    assert {
        ("rbac.yaml", "ServiceAccount", "dnsd"),
        ("rbac.yaml", "ClusterRole", "system:dnsd"),
        ("rbac.yaml", "ClusterRoleBinding", "system:dnsd"),
        ("cluster-dns/configmap.yaml", "ConfigMap", "coredns"),
        ("cluster-dns/deployment.yaml", "Deployment", "coredns"),
        ("cluster-dns/service.yaml", "Service", "kube-dns"),
        ("sidecar/app-with-dnsd.yaml", "Deployment", "shop-web"),
        ("sidecar/app-with-dnsd.yaml", "ConfigMap", "shop-web-dnsd"),
    } <= kinds
    assert (DEPLOY / "kind" / "kind-config.yaml").is_file()


# --- Corefiles ------------------------------------------------------------------------------

COREFILES = [(f, d) for f, _, d in DOCS if d.get("kind") == "ConfigMap" and "Corefile" in d.get("data", {})]


def build(text: str, name: str) -> Runtime:
    return Runtime.build(parse(text, name), default_port=53, config_file=name)


@pytest.mark.parametrize("file, doc", COREFILES, ids=[f"{f}:{d['metadata']['name']}" for f, d in COREFILES])
def test_configmap_corefiles_parse_and_build(file: str, doc: Doc) -> None:
    runtime = build(doc["data"]["Corefile"], f"{file}:Corefile")
    assert runtime.plugins
    assert any(p.name == "kubernetes" for p in runtime.plugins)


def test_cluster_dns_corefile_is_the_kubeadm_default() -> None:
    cm = find("ConfigMap", "coredns")
    assert cm["metadata"]["namespace"] == "kube-system"
    assert cm["data"]["Corefile"] == (ROOT / "Corefile.example").read_text()


def plugin(runtime: Runtime, name: str) -> Any:
    (found,) = [p for p in runtime.plugins if p.name == name]
    return found


# --- cluster DNS ----------------------------------------------------------------------------

KUBEADM_KUBE_DNS = {
    "apiVersion": "v1",
    "kind": "Service",
    "metadata": {
        "name": "kube-dns",
        "namespace": "kube-system",
        "labels": {"k8s-app": "kube-dns", "kubernetes.io/cluster-service": "true",
                   "kubernetes.io/name": "CoreDNS"},
        "annotations": {"prometheus.io/port": "9153", "prometheus.io/scrape": "true"},
    },
    "spec": {
        "clusterIP": "10.96.0.10",
        "ports": [
            {"name": "dns", "port": 53, "protocol": "UDP", "targetPort": 53},
            {"name": "dns-tcp", "port": 53, "protocol": "TCP", "targetPort": 53},
            {"name": "metrics", "port": 9153, "protocol": "TCP", "targetPort": 9153},
        ],
        "selector": {"k8s-app": "kube-dns"},
    },
}


def test_kube_dns_service_is_kubeadms() -> None:
    assert find("Service", "kube-dns") == KUBEADM_KUBE_DNS


def only_container(deployment: Doc) -> Doc:
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    return container


def test_cluster_dns_deployment_replaces_coredns() -> None:
    dep = find("Deployment", "coredns")
    assert dep["metadata"]["namespace"] == "kube-system"
    assert dep["metadata"]["labels"]["k8s-app"] == "kube-dns"
    assert dep["spec"]["selector"] == {"matchLabels": {"k8s-app": "kube-dns"}}
    pod = dep["spec"]["template"]
    assert pod["metadata"]["labels"]["k8s-app"] == "kube-dns"
    # The kube-dns Service selects these pods.
    assert KUBEADM_KUBE_DNS["spec"]["selector"].items() <= pod["metadata"]["labels"].items()
    spec = pod["spec"]
    assert spec["dnsPolicy"] == "Default"
    assert spec["serviceAccountName"] == "dnsd"
    c = only_container(dep)
    assert c["image"] == "dnsd:dev"
    assert c["args"] == ["-conf", "/etc/coredns/Corefile"]
    assert {(p["containerPort"], p["protocol"]) for p in c["ports"]} >= {(53, "UDP"), (53, "TCP"), (9153, "TCP")}
    assert c["resources"]["requests"]["cpu"] and c["resources"]["requests"]["memory"]
    assert c["resources"]["limits"]["memory"]
    (mount,) = c["volumeMounts"]
    (volume,) = spec["volumes"]
    assert mount == {"name": volume["name"], "mountPath": "/etc/coredns", "readOnly": True}
    assert volume["configMap"] == {"name": "coredns", "items": [{"key": "Corefile", "path": "Corefile"}]}

    # The probes hit the ports the Corefile's health and ready plugins listen on.
    runtime = build(find("ConfigMap", "coredns")["data"]["Corefile"], "coredns")
    health, ready, prom = plugin(runtime, "health"), plugin(runtime, "ready"), plugin(runtime, "prometheus")
    assert (health.port, ready.port, prom.port) == (8080, 8181, 9153)
    assert c["livenessProbe"]["httpGet"] == {"path": "/health", "port": health.port, "scheme": "HTTP"}
    assert c["readinessProbe"]["httpGet"] == {"path": "/ready", "port": ready.port, "scheme": "HTTP"}
    assert c["startupProbe"]["httpGet"] == {"path": "/health", "port": health.port, "scheme": "HTTP"}
    # The kubelet waits out the lameduck before it kills the container.
    assert spec["terminationGracePeriodSeconds"] > health.lameduck


def test_kind_config_keeps_the_service_subnet_the_manifests_assume() -> None:
    config = yaml.safe_load((DEPLOY / "kind" / "kind-config.yaml").read_text())
    assert config["networking"]["serviceSubnet"] == "10.96.0.0/16"


# --- least privilege ------------------------------------------------------------------------

def dockerfile_instructions() -> list[tuple[str, str]]:
    text = (DEPLOY / "image" / "Dockerfile").read_text()
    joined = re.sub(r"\\\n", " ", "\n".join(
        line for line in text.splitlines() if not line.lstrip().startswith("#")))
    out = []
    for line in joined.splitlines():
        if line.strip():
            word, _, rest = line.strip().partition(" ")
            out.append((word.upper(), " ".join(rest.split())))
    return out


def test_dockerfile_builds_a_non_root_read_only_image() -> None:
    ins = dockerfile_instructions()
    get = lambda word: [rest for w, rest in ins if w == word]  # noqa: E731
    assert get("FROM") == ["python:3.11-slim"]
    (user,) = get("USER")
    uid = user.split(":")[0]
    assert uid == str(NON_ROOT_UID)
    assert get("ENTRYPOINT") == ['["dnsd"]']
    assert get("CMD") == ['["-conf", "/etc/coredns/Corefile"]']
    assert set(" ".join(get("EXPOSE")).split()) == {"53/udp", "53/tcp", "8080", "8181", "9153"}
    env = " ".join(get("ENV"))
    assert "PYTHONDONTWRITEBYTECODE=1" in env
    (run,) = get("RUN")
    assert "pip install" in run and "[fast]" in run and "[test]" not in run
    assert "setcap" not in run  # no file capabilities: the pods use the unprivileged-port sysctl
    # The build context keeps what `pip install` needs.
    ignore = (DEPLOY / "image" / "Dockerfile.dockerignore").read_text().splitlines()
    assert {"*", "!pyproject.toml", "!README.md", "!dnsd"} <= set(ignore)
    copied = " ".join(get("COPY"))
    for needed in ("pyproject.toml", "README.md", "dnsd"):
        assert needed in copied and (ROOT / needed).exists()


DNSD_CONTAINERS = [
    ("cluster-dns", "coredns", "coredns"),
    ("sidecar", "shop-web", "dnsd"),
]


@pytest.mark.parametrize("what, deployment, container", DNSD_CONTAINERS)
def test_dnsd_pods_run_with_least_privilege(what: str, deployment: str, container: str) -> None:
    spec = find("Deployment", deployment)["spec"]["template"]["spec"]
    (c,) = [c for c in spec.get("containers", []) + spec.get("initContainers", []) if c["name"] == container]
    pod_sc = spec["securityContext"]
    assert pod_sc["runAsNonRoot"] is True
    assert pod_sc["runAsUser"] == NON_ROOT_UID
    assert pod_sc["seccompProfile"] == {"type": "RuntimeDefault"}
    assert not spec.get("hostNetwork", False)
    sc = c["securityContext"]
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["readOnlyRootFilesystem"] is True
    assert sc.get("privileged", False) is False
    assert sc["capabilities"]["drop"] == ["ALL"]
    added = sc["capabilities"].get("add", [])
    assert added in ([], ["NET_BIND_SERVICE"])
    if added == []:
        # Without a capability, a non-root process binds :53 only through this sysctl.
        assert UNPRIVILEGED_PORTS in pod_sc["sysctls"]
    assert c["image"] == "dnsd:dev"


# --- the sidecar ----------------------------------------------------------------------------

def test_sidecar_pod_resolves_through_its_own_dnsd() -> None:
    dep = find("Deployment", "shop-web")
    ns = dep["metadata"]["namespace"]
    spec = dep["spec"]["template"]["spec"]
    assert spec["dnsPolicy"] == "None"
    assert spec["dnsConfig"] == {
        "nameservers": ["127.0.0.1"],
        "searches": [f"{ns}.svc.cluster.local", "svc.cluster.local", "cluster.local"],
        "options": [{"name": "ndots", "value": "5"}],
    }
    (sidecar,) = spec["initContainers"]
    assert sidecar["restartPolicy"] == "Always"  # a native sidecar: up before the app
    cm = find("ConfigMap", sidecar_config_name(spec, sidecar))
    assert cm["metadata"]["namespace"] == ns
    runtime = build(cm["data"]["Corefile"], "sidecar")
    assert plugin(runtime, "bind").hosts == ["127.0.0.1"]
    k8s = plugin(runtime, "kubernetes")
    assert k8s.cfg.namespaces == [ns]
    assert k8s.cfg.zones == ["cluster.local."]
    assert k8s.cfg.fallthrough == ["cluster.local."]  # other namespaces: the cluster DNS
    assert [p.name for p in runtime.plugins if p.name == "cache"] == ["cache"]
    cluster_dns = KUBEADM_KUBE_DNS["spec"]["clusterIP"]
    assert re.search(rf"^\s*forward \. {re.escape(cluster_dns)}\s*$", cm["data"]["Corefile"], re.M)
    health, ready = plugin(runtime, "health"), plugin(runtime, "ready")
    assert sidecar["livenessProbe"]["httpGet"] == {"path": "/health", "port": health.port}
    assert sidecar["readinessProbe"]["httpGet"] == {"path": "/ready", "port": ready.port}
    assert sidecar["startupProbe"]["httpGet"] == {"path": "/ready", "port": ready.port}
    # The probes reach the pod IP: health and ready listen on every address.
    assert health.host == "" and ready.host == ""
    # Its service account is the one the sidecar's RBAC binds.
    binding = find("ClusterRoleBinding", "shop-web-dnsd")
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": spec["serviceAccountName"],
                                    "namespace": ns}]


def sidecar_config_name(spec: Doc, container: Doc) -> str:
    (mount,) = container["volumeMounts"]
    (volume,) = [v for v in spec["volumes"] if v["name"] == mount["name"]]
    assert container["args"] == ["-conf", f"{mount['mountPath']}/Corefile"]
    return str(volume["configMap"]["name"])


# --- RBAC -----------------------------------------------------------------------------------

VERBS = ("get", "list", "watch")
CORE_READ = ("services", "namespaces", "pods", "endpoints")
# The default system:discovery ClusterRole (bound to every authenticated user).
DISCOVERY_URLS = ("/api", "/api/*", "/apis", "/apis/*", "/healthz", "/livez", "/openapi",
                  "/openapi/*", "/readyz", "/version", "/version/")

Grant = tuple[str, str, str]  # (apiGroup, resource, verb)


def expand(role: Doc) -> set[Grant]:
    out: set[Grant] = set()
    for rule in role["rules"]:
        assert "resourceNames" not in rule and "nonResourceURLs" not in rule, rule
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                for verb in rule["verbs"]:
                    out.add((group, resource, verb))
    assert not any("*" in g for grant in out for g in grant), "no wildcards"
    return out


def classify(method: str, path: str, params: dict[str, str]) -> Grant | str:
    """(apiGroup, resource, verb) of a resource request, or the path of a non-resource one."""
    parts = [p for p in path.split("/") if p]
    if parts[:1] == ["api"] and len(parts) >= 3:
        group, rest = "", parts[2:]
    elif parts[:1] == ["apis"] and len(parts) >= 4:
        group, rest = parts[1], parts[3:]
    else:
        return path
    if rest[0] == "namespaces" and len(rest) >= 3:
        rest = rest[2:]  # a namespaced request: .../namespaces/NS/RESOURCE[/NAME]
    resource, named = rest[0], len(rest) > 1
    assert method == "GET", (method, path)
    watch = params.get("watch") in ("true", "1")
    return (group, resource, "watch" if watch else ("get" if named else "list"))


def discovery_allows(path: str) -> bool:
    return any(path == url or (url.endswith("*") and path.startswith(url[:-1])) for url in DISCOVERY_URLS)


def test_cluster_role_grants_only_reads_of_what_dnsd_watches() -> None:
    role = find("ClusterRole", "system:dnsd")
    assert expand(role) == {("", r, v) for r in CORE_READ for v in VERBS} | {
        ("discovery.k8s.io", "endpointslices", v) for v in VERBS}
    binding = find("ClusterRoleBinding", "system:dnsd")
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                                  "name": "system:dnsd"}
    sa = find("ServiceAccount", "dnsd")
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "dnsd",
                                    "namespace": sa["metadata"]["namespace"]}]
    assert sa["metadata"]["namespace"] == "kube-system"


def test_sidecar_role_is_read_only_and_within_system_dnsd() -> None:
    sidecar = expand(find("ClusterRole", "shop-web-dnsd"))
    assert sidecar <= expand(find("ClusterRole", "system:dnsd"))
    assert {v for _, _, v in sidecar} == set(VERBS)


def kubernetes_block(corefile: str) -> str:
    """The ``kubernetes ... { ... }`` directive of a Corefile, as text."""
    m = re.search(r"^(\s*)kubernetes\b[^\n{]*\{.*?^\1\}", corefile, re.M | re.S)
    assert m, corefile
    return m.group(0)


@contextlib.contextmanager
def dnsd_against(cluster: DevCluster, k8s: str) -> Iterator[Dnsd]:
    """dnsd with ``k8s`` (a kubernetes directive) pointed at the emulator, ready."""
    k8s = re.sub(r"\{", f"{{\n        endpoint {cluster.url}", k8s, count=1)
    ready = free_port()
    d = Dnsd(f""".:{{PORT}} {{
    bind 127.0.0.1
    ready 127.0.0.1:{ready}
{k8s}
}}
""")
    try:
        d.start()
        deadline = time.monotonic() + 10
        while _status(ready) != 200:
            assert time.monotonic() < deadline, d.output()
            time.sleep(0.05)
        yield d
    finally:
        assert d.stop() == 0


def _status(port: int) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
    try:
        conn.request("GET", "/ready")
        return conn.getresponse().status
    except OSError:
        return 0
    finally:
        conn.close()


def corefile_of(name: str) -> str:
    return str(find("ConfigMap", name)["data"]["Corefile"])


PODS_VERIFIED = """    kubernetes cluster.local in-addr.arpa ip6.arpa {
        pods verified
    }"""

RBAC_CASES = [
    # (id, role, kubernetes directive (None: the ConfigMap's), ConfigMap, EndpointSlices served)
    ("cluster-dns", "system:dnsd", None, "coredns", True),
    ("pods-verified", "system:dnsd", PODS_VERIFIED, "", True),
    ("pods-verified-endpoints-fallback", "system:dnsd", PODS_VERIFIED, "", False),
    ("sidecar", "shop-web-dnsd", None, "shop-web-dnsd", True),
    ("sidecar-endpoints-fallback", "shop-web-dnsd", None, "shop-web-dnsd", False),
]
EXPECTED_READS = {
    "cluster-dns": {"services", "namespaces", "endpointslices"},
    "pods-verified": {"services", "namespaces", "endpointslices", "pods"},
    "pods-verified-endpoints-fallback": {"services", "namespaces", "endpoints", "pods"},
    "sidecar": {"services", "namespaces", "endpointslices"},
    "sidecar-endpoints-fallback": {"services", "namespaces", "endpoints"},
}


@pytest.mark.parametrize("case, role, k8s, configmap, slices", RBAC_CASES, ids=[c[0] for c in RBAC_CASES])
def test_rbac_covers_every_request_dnsd_makes(case: str, role: str, k8s: str | None,
                                              configmap: str, slices: bool) -> None:
    grants = expand(find("ClusterRole", role))
    directive = k8s if k8s is not None else kubernetes_block(corefile_of(configmap))
    cluster = DevCluster(endpointslices=slices).start()
    try:
        cluster.load_yaml(ROOT / "deploy" / "demo" / "cluster.yaml")
        with dnsd_against(cluster, directive) as d:
            answer = query("cluster.local.", "SOA", port=d.port)
            assert [rrset.rdtype for rrset in answer.answer] == [dns.rdatatype.SOA]
        log = cluster.request_log.snapshot()
    finally:
        cluster.stop()
    assert log
    resource_requests = set()
    for method, path, q in log:
        kind = classify(method, path, q)
        if isinstance(kind, str):
            assert discovery_allows(kind), f"{method} {path}: not a discovery URL"
            continue
        assert kind in grants, f"{method} {path}?{q} needs {kind}, which {role} does not grant"
        resource_requests.add(kind)
    group = {"endpointslices": "discovery.k8s.io"}
    assert resource_requests == {(group.get(r, ""), r, v) for r in EXPECTED_READS[case]
                                 for v in ("list", "watch")}


# --- deploy/kind/up.sh --------------------------------------------------------------------

UP = DEPLOY / "kind" / "up.sh"


def test_up_script_parses_and_names_existing_files() -> None:
    subprocess.run(["bash", "-n", str(UP)], check=True, timeout=10)
    text = UP.read_text()
    for path in set(re.findall(r"\bdeploy/[\w./-]+\.(?:yaml|sh)|\bdeploy/image/Dockerfile\b", text)):
        assert (ROOT / path).is_file(), path
    for step in ("kind create cluster", "docker build -f deploy/image/Dockerfile -t", "kind load docker-image",
                 "apply -f deploy/rbac.yaml", "rollout status deployment/coredns", "jessie-dnsutils"):
        assert step in text, step


@pytest.mark.skipif(shutil.which("shellcheck") is None, reason="shellcheck is not installed")
def test_up_script_is_shellcheck_clean() -> None:
    result = subprocess.run(["shellcheck", str(UP)], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stdout


def test_readme_walks_through_the_kind_setup() -> None:
    readme = (ROOT / "README.md").read_text()
    start = readme.index("\n## Run in kind\n")
    doc = readme[start : readme.index("\n## ", start + 1)]
    for needed in ("deploy/kind/up.sh", "deploy/cluster-dns/", "deploy/sidecar/app-with-dnsd.yaml",
                   "/health", "/ready", "/metrics", "rollout undo"):
        assert needed in doc, needed
