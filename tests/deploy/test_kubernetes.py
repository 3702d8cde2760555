"""The README's Kubernetes manifests (``deploy/kubernetes``) against Kubernetes' own schemas, strictly.

Not run on a cluster here: this checks every field name and type, as ``kubectl apply`` would, and that the
two Deployments wire up as ``deploy/topology.py`` runs them (health probes, the upstream URL, the index on S3).
"""

from __future__ import annotations

from pathlib import Path

import kubernetes_validate
import pytest
import yaml

MANIFESTS = sorted((Path(__file__).parents[2] / "deploy" / "kubernetes").glob("*.yaml"))


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: p.name)
def test_each_manifest_is_valid_kubernetes(path):
    for doc in yaml.safe_load_all(path.read_text()):
        kubernetes_validate.validate(doc, "1.33.0", strict=True)  # raises on an unknown or mistyped field


def test_the_search_servers_reach_the_vllm_service_and_the_index_on_s3():
    docs = {(d["kind"], d["metadata"]["name"]): d for p in MANIFESTS for d in yaml.safe_load_all(p.read_text())}
    vllm = docs[("Service", "vllm")]["spec"]["ports"][0]["port"]
    (serve,) = docs[("Deployment", "research-serve")]["spec"]["template"]["spec"]["containers"]
    args = serve["args"]
    assert args[args.index("--upstream-url") + 1] == f"http://vllm:{vllm}/v1" and "--engine" in args
    assert args[args.index("--index") + 1].startswith("s3://")
    for name in ("vllm", "research-serve"):
        (container,) = docs[("Deployment", name)]["spec"]["template"]["spec"]["containers"]
        assert container["readinessProbe"]["httpGet"]["path"] == "/health"
