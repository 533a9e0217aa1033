#!/usr/bin/env bash
# Create a kind cluster whose cluster DNS is dnsd instead of CoreDNS, then check that it answers.
#
#   deploy/kind/up.sh                  # cluster "dnsd" (CLUSTER=name to change it)
#   kind delete cluster --name dnsd    # when done
#
# Needs docker, kind and kubectl.  Safe to run again: an existing cluster is reused, the image
# rebuilt and reloaded, the manifests re-applied and the DNS pods restarted.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
CLUSTER=${CLUSTER:-dnsd}
CTX="kind-${CLUSTER}"
IMAGE=dnsd:dev   # the name deploy/cluster-dns/deployment.yaml uses
PROBE_POD=dnsd-probe
PROBE_IMAGE=registry.k8s.io/e2e-test-images/jessie-dnsutils:1.7
# CoreDNS's Corefile and Deployment revision, kept for the roll back the script prints.
BACKUP="${TMPDIR:-/tmp}/dnsd-kind-${CLUSTER}"

k() { kubectl --context "$CTX" "$@"; }
step() { printf '\n==> %s\n' "$*"; }
fail() { printf 'FAIL: %s\n' "$*" >&2; exit 1; }

for tool in docker kind kubectl; do
  command -v "$tool" >/dev/null || fail "$tool is not installed"
done
cd "$ROOT"

step "1. kind cluster ${CLUSTER}"
if kind get clusters 2>/dev/null | grep -qx "$CLUSTER"; then
  echo "reusing the existing cluster"
else
  kind create cluster --name "$CLUSTER" --config deploy/kind/kind-config.yaml --wait 180s
fi

step "2. image ${IMAGE}: build, load into the kind nodes"
docker build -f deploy/image/Dockerfile -t "$IMAGE" .
kind load docker-image "$IMAGE" --name "$CLUSTER"

step "3. RBAC: ServiceAccount dnsd, ClusterRole and ClusterRoleBinding system:dnsd"
k apply -f deploy/rbac.yaml

step "4. replace CoreDNS: ConfigMap coredns, Service kube-dns (unchanged), Deployment coredns"
before=$(k -n kube-system get deployment coredns \
  -o jsonpath='{.spec.template.spec.containers[0].image}' 2>/dev/null || true)
revision=$(k -n kube-system get deployment coredns \
  -o jsonpath='{.metadata.annotations.deployment\.kubernetes\.io/revision}' 2>/dev/null || true)
if [ -n "$before" ] && [ "$before" != "$IMAGE" ]; then
  # Still CoreDNS: keep its Corefile for the roll back.
  k -n kube-system get configmap coredns -o jsonpath='{.data.Corefile}' >"${BACKUP}.Corefile"
  echo "$revision" >"${BACKUP}.revision"
  echo "CoreDNS (${before}) is revision ${revision}; its Corefile is saved in ${BACKUP}.Corefile"
fi
k apply -f deploy/cluster-dns/configmap.yaml
k apply -f deploy/cluster-dns/service.yaml
# `replace`, not `apply`: kubeadm created the Deployment without kubectl's last-applied
# annotation, so `apply` would merge the two pod templates (keeping CoreDNS's probes and
# capabilities).  `replace` swaps the whole spec in one rolling update.
if [ -n "$before" ]; then
  k replace -f deploy/cluster-dns/deployment.yaml
else
  k create -f deploy/cluster-dns/deployment.yaml
fi
if [ "$before" = "$IMAGE" ]; then
  # Already dnsd: the same pod template does not roll, but the image may have been rebuilt.
  k -n kube-system rollout restart deployment/coredns
fi
k -n kube-system rollout status deployment/coredns --timeout=180s

step "5. the DNS pods run dnsd"
k -n kube-system get pods -l k8s-app=kube-dns -o wide
# A pod of the new ReplicaSet that is not shutting down (old pods linger for the lameduck).
pods=$(k -n kube-system get pods -l app.kubernetes.io/name=dnsd \
  -o go-template='{{range .items}}{{if not .metadata.deletionTimestamp}}{{.metadata.name}}{{"\n"}}{{end}}{{end}}')
pod=${pods%%$'\n'*}
[ -n "$pod" ] || fail "no running dnsd pod"
logs=$(k -n kube-system logs "$pod")
grep -q '^dnsd-' <<<"$logs" || fail "$pod does not log dnsd's banner"
echo "${pod}: $(grep -m 1 '^dnsd-' <<<"$logs")"

step "6. probes and metrics of ${pod} (through the API server's pod proxy)"
proxy="/api/v1/namespaces/kube-system/pods/${pod}"
echo "/health -> $(k get --raw "${proxy}:8080/proxy/health")"
echo "/ready  -> $(k get --raw "${proxy}:8181/proxy/ready")"
metrics=$(k get --raw "${proxy}:9153/proxy/metrics")
grep -E '^coredns_(build_info|dns_requests_total)' <<<"$metrics" | head -n 5 || true
grep -q '^coredns_build_info{.*revision="dnsd-' <<<"$metrics" || fail "no dnsd coredns_build_info"

step "7. a test pod digs through the cluster DNS (kube-dns, 10.96.0.10)"
k delete pod "$PROBE_POD" --ignore-not-found --wait=true >/dev/null
k run "$PROBE_POD" --image="$PROBE_IMAGE" --restart=Never --command -- sleep 600
trap 'k delete pod "$PROBE_POD" --ignore-not-found --wait=false >/dev/null' EXIT
k wait --for=condition=Ready "pod/${PROBE_POD}" --timeout=180s

dig_in_pod() { k exec "$PROBE_POD" -- dig +short +time=2 +tries=3 "$@"; }
expect() {  # expect WHAT GOT WANT
  echo "$1 -> ${2:-<nothing>}"
  [ "$2" = "$3" ] || fail "$1: expected '$3'"
}

expect "A   kubernetes.default.svc.cluster.local" \
  "$(dig_in_pod kubernetes.default.svc.cluster.local A)" "10.96.0.1"
expect "SRV _https._tcp.kubernetes.default.svc.cluster.local" \
  "$(dig_in_pod _https._tcp.kubernetes.default.svc.cluster.local SRV)" \
  "0 100 443 kubernetes.default.svc.cluster.local."
expect "PTR 10.96.0.10" "$(dig_in_pod -x 10.96.0.10)" "kube-dns.kube-system.svc.cluster.local."
expect "A   kubernetes.default (through the pod's search list)" \
  "$(dig_in_pod +search kubernetes.default)" "10.96.0.1"
external=$(dig_in_pod kubernetes.io A 2>/dev/null | tail -n 1 || true)
echo "A   kubernetes.io (forwarded upstream; needs internet access) -> ${external:-<nothing>}"

step "dnsd is the cluster DNS of ${CTX}"
echo "Sidecar example:  kubectl --context ${CTX} apply -f deploy/sidecar/app-with-dnsd.yaml"
if [ -f "${BACKUP}.revision" ] && [ -f "${BACKUP}.Corefile" ]; then
  cat <<EOT
Back to CoreDNS:  kubectl --context ${CTX} -n kube-system rollout undo deployment/coredns --to-revision=$(cat "${BACKUP}.revision")
                  kubectl --context ${CTX} -n kube-system create configmap coredns \\
                    --from-file=Corefile=${BACKUP}.Corefile --dry-run=client -o yaml \\
                    | kubectl --context ${CTX} apply -f -
EOT
fi
