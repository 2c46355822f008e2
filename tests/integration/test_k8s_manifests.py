"""Kubernetes manifests (issue 9): deploy/k8s renders with `kubectl
kustomize` (offline), passes yamllint, and the rendered objects have the
properties docs/deploy.md promises: a StatefulSet with a spool claim per
replica, probes on the SMTP listener and /metrics, a PodDisruptionBudget
and Services whose selectors match the pods, container ports equal to the
entrypoint's listeners, a ServiceMonitor on the metrics port, a locked-down
securityContext and a grace period longer than the drain. A missing
kubectl, yamllint or shellcheck (the entrypoint is checked here too) is a
failure, not a skip (scripts/setup.sh installs them)."""

import os
import re
import shutil
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import check, run_tests  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))
K8S = os.path.join(ROOT, "deploy", "k8s")
ENTRYPOINT = os.path.join(ROOT, "deploy", "entrypoint.sh")
CONTAINERFILE = os.path.join(ROOT, "deploy", "Containerfile")
SHUTDOWN_DEFAULT = 10  # timeouts.shutdown, docs/configuration.md

_rendered = []


def tool(name):
    path = shutil.which(name)
    check(path is not None, f"{name} is installed (scripts/setup.sh)")
    return path


def rendered():
    """The objects of `kubectl kustomize deploy/k8s`, parsed once."""
    if not _rendered:
        import yaml
        r = subprocess.run([tool("kubectl"), "kustomize", K8S],
                           capture_output=True, text=True, timeout=120)
        check(r.returncode == 0, f"kubectl kustomize: {r.stderr.strip()}")
        _rendered.extend(d for d in yaml.safe_load_all(r.stdout) if d)
    return _rendered


def objects(kind):
    return [o for o in rendered() if o["kind"] == kind]


def one(kind):
    got = objects(kind)
    check(len(got) == 1, f"one {kind}: got {len(got)}")
    return got[0]


def pod_spec():
    return one("StatefulSet")["spec"]["template"]["spec"]


def container():
    cs = pod_spec()["containers"]
    check(len(cs) == 1, f"one container: got {len(cs)}")
    return cs[0]


def container_ports():
    return {p["name"]: p["containerPort"] for p in container()["ports"]}


def selects(selector, labels):
    return all(labels.get(k) == v for k, v in selector.items())


def entrypoint_defaults():
    """NAME_LISTEN_DEFAULT=host:port lines of deploy/entrypoint.sh."""
    with open(ENTRYPOINT) as f:
        text = f.read()
    found = dict(re.findall(r"^([A-Z]+)_LISTEN_DEFAULT=(\S+)$", text, re.M))
    check(set(found) == {"SMTP", "SUBMISSION", "METRICS"},
          f"entrypoint listener defaults: got {found}")
    return {k.lower(): int(v.rsplit(":", 1)[1]) for k, v in found.items()}


def test_kustomize_renders():
    kinds = sorted(o["kind"] for o in rendered())
    want = sorted(["ConfigMap", "Secret", "Service", "Service",
                   "StatefulSet", "PodDisruptionBudget", "ServiceMonitor"])
    check(kinds == want, f"rendered kinds: got {kinds}, want {want}")


def test_yamllint():
    files = sorted(os.path.join(K8S, n) for n in os.listdir(K8S)
                   if n.endswith(".yaml"))
    check(len(files) >= 6, f"manifests found: {files}")
    r = subprocess.run([tool("yamllint"), "-s", "-c",
                        os.path.join(K8S, ".yamllint")] + files,
                       capture_output=True, text=True, timeout=120)
    check(r.returncode == 0, f"yamllint: {r.stdout}{r.stderr}")


def test_entrypoint_shellcheck():
    """The entrypoint is POSIX sh (the image runs it with dash)."""
    r = subprocess.run([tool("shellcheck"), "-s", "sh", ENTRYPOINT],
                       capture_output=True, text=True, timeout=120)
    check(r.returncode == 0, f"shellcheck: {r.stdout}{r.stderr}")


def test_statefulset_and_volume_claim():
    sts = one("StatefulSet")
    spec = sts["spec"]
    check(spec.get("replicas", 1) >= 2,
          f"replicas: got {spec.get('replicas')}, want 2 or more")
    check(selects(spec["selector"]["matchLabels"],
                  spec["template"]["metadata"]["labels"]),
          "StatefulSet selector matches its pod labels")
    headless = [s for s in objects("Service")
                if s["metadata"]["name"] == spec["serviceName"]]
    check(headless and headless[0]["spec"].get("clusterIP") == "None",
          f"serviceName {spec['serviceName']} is a headless Service")
    claims = {c["metadata"]["name"]: c["spec"]
              for c in spec["volumeClaimTemplates"]}
    check("spool" in claims, f"a spool claim template: got {list(claims)}")
    check(claims["spool"]["accessModes"] == ["ReadWriteOnce"],
          f"spool access modes: got {claims['spool']['accessModes']}")
    check(claims["spool"]["resources"]["requests"].get("storage"),
          "spool claim requests storage")
    mounts = {m["name"]: m["mountPath"] for m in container()["volumeMounts"]}
    check(mounts.get("spool") == "/var/lib/postseal",
          f"spool mounted at the image's volume: got {mounts}")
    check(mounts.get("tmp") == "/tmp",
          f"a writable /tmp for the generated config: got {mounts}")
    vols = {v["name"]: v for v in pod_spec()["volumes"]}
    check("emptyDir" in vols.get("tmp", {}), f"tmp is an emptyDir: {vols}")
    retain = spec.get("persistentVolumeClaimRetentionPolicy", {})
    check(retain.get("whenScaled") == "Retain" and
          retain.get("whenDeleted") == "Retain",
          f"spool claims are kept: got {retain}")


def test_ports_match_entrypoint():
    want = entrypoint_defaults()
    got = container_ports()
    check(got == want, f"container ports: got {got}, want {want}")
    svc = [s for s in objects("Service")
           if s["metadata"]["name"] == "postseal"]
    check(len(svc) == 1, "a Service named postseal")
    ports = {p["name"]: p for p in svc[0]["spec"]["ports"]}
    for name, port in (("smtp", 25), ("submission", 587),
                       ("metrics", 9425)):
        check(name in ports, f"Service port {name}")
        check(ports[name]["port"] == port,
              f"Service {name} port: got {ports[name]['port']}, want {port}")
        target = ports[name]["targetPort"]
        check(target == name or target == got[name],
              f"Service {name} targets the container's {name} port: "
              f"got {target}")


def test_probes():
    c = container()
    ports = container_ports()
    ready = c["readinessProbe"]
    check("tcpSocket" in ready, f"readiness is a tcpSocket probe: {ready}")
    p = ready["tcpSocket"]["port"]
    check(p in ("smtp", ports["smtp"]),
          f"readiness on the SMTP listener: got {p}")
    for kind in ("livenessProbe", "startupProbe"):
        probe = c[kind]
        check("httpGet" in probe, f"{kind} is an httpGet probe: {probe}")
        check(probe["httpGet"]["path"] == "/metrics",
              f"{kind} path: got {probe['httpGet']['path']}")
        p = probe["httpGet"]["port"]
        check(p in ("metrics", ports["metrics"]),
              f"{kind} on the metrics listener: got {p}")


def test_pdb_and_services_select_the_pods():
    labels = one("StatefulSet")["spec"]["template"]["metadata"]["labels"]
    pdb = one("PodDisruptionBudget")
    check(pdb["apiVersion"] == "policy/v1", "PDB is policy/v1")
    sel = pdb["spec"]["selector"]["matchLabels"]
    check(sel and selects(sel, labels),
          f"PDB selector {sel} matches pod labels {labels}")
    check("maxUnavailable" in pdb["spec"] or "minAvailable" in pdb["spec"],
          "PDB sets a budget")
    for s in objects("Service"):
        check(selects(s["spec"]["selector"], labels),
              f"Service {s['metadata']['name']} selects the pods")


def test_service_monitor():
    sm = one("ServiceMonitor")
    check(sm["apiVersion"] == "monitoring.coreos.com/v1",
          f"ServiceMonitor apiVersion: got {sm['apiVersion']}")
    sel = sm["spec"]["selector"]["matchLabels"]
    hit = [s for s in objects("Service")
           if selects(sel, s["metadata"].get("labels", {}))]
    check(len(hit) == 1, f"ServiceMonitor selects one Service (no double "
          f"scrape): got {[s['metadata']['name'] for s in hit]}")
    names = {p["name"] for p in hit[0]["spec"]["ports"]}
    for ep in sm["spec"]["endpoints"]:
        check(ep["port"] in names, f"endpoint port {ep['port']} in {names}")
        check(ep.get("path", "/metrics") == "/metrics", "path /metrics")


def test_security_context():
    pod = pod_spec()["securityContext"]
    sc = container()["securityContext"]
    check(pod.get("runAsNonRoot") is True or sc.get("runAsNonRoot") is True,
          "runAsNonRoot")
    with open(CONTAINERFILE) as f:
        m = re.search(r"^USER (\d+):(\d+)$", f.read(), re.M)
    check(m is not None, "the Containerfile has a numeric USER")
    check(pod.get("runAsUser") == int(m.group(1)),
          f"runAsUser: got {pod.get('runAsUser')}, image {m.group(1)}")
    check(pod.get("fsGroup") == int(m.group(2)),
          "fsGroup lets the user write the spool claim")
    check(sc.get("readOnlyRootFilesystem") is True, "read-only root")
    check(sc.get("allowPrivilegeEscalation") is False,
          "no privilege escalation")
    check(sc.get("capabilities", {}).get("drop") == ["ALL"],
          f"drops all capabilities: got {sc.get('capabilities')}")
    check("add" not in sc.get("capabilities", {}), "adds no capability")


def test_drain_grace_and_resources():
    c = container()
    pre = c["lifecycle"]["preStop"]["exec"]["command"]
    check(pre[0] == "sleep", f"preStop waits for endpoints: got {pre}")
    grace = pod_spec()["terminationGracePeriodSeconds"]
    need = int(pre[1]) + SHUTDOWN_DEFAULT + 10
    check(grace >= need, f"grace {grace}s covers preStop + drain + margin "
          f"({need}s)")
    res = c["resources"]
    for k in ("cpu", "memory"):
        check(res["requests"].get(k) and res["limits"].get(k),
              f"requests and limits set {k}: {res}")
    env = one("ConfigMap")["data"]
    threads = int(env.get("POSTSEAL_THREADS", "0"))
    check(1 <= threads <= int(res["limits"]["cpu"]),
          f"POSTSEAL_THREADS {threads} within the CPU limit "
          f"{res['limits']['cpu']}")


def test_env_from_configmap_and_secret():
    refs = container()["envFrom"]
    cms = {o["metadata"]["name"] for o in objects("ConfigMap")}
    secrets = {o["metadata"]["name"] for o in objects("Secret")}
    got_cm = [r["configMapRef"]["name"] for r in refs if "configMapRef" in r]
    got_s = [r["secretRef"]["name"] for r in refs if "secretRef" in r]
    check(got_cm and set(got_cm) <= cms, f"envFrom ConfigMap: {got_cm}")
    check(got_s and set(got_s) <= secrets, f"envFrom Secret: {got_s}")
    image = container()["image"]
    check(image.startswith("localhost/postseal:"),
          f"kustomization's images override applied: got {image}")


if __name__ == "__main__":
    sys.exit(run_tests([test_kustomize_renders, test_yamllint,
                        test_entrypoint_shellcheck,
                        test_statefulset_and_volume_claim,
                        test_ports_match_entrypoint, test_probes,
                        test_pdb_and_services_select_the_pods,
                        test_service_monitor, test_security_context,
                        test_drain_grace_and_resources,
                        test_env_from_configmap_and_secret]))
