"""The `[kubernetes]` table: enrichment from the API server (off unless enabled)."""

from __future__ import annotations

from dataclasses import dataclass

from pipelines.options import opt


@dataclass(slots=True)
class KubernetesSettings:
    enabled: bool = opt(False, help="enrich records with pod metadata from the Kubernetes API server")
    api_url: str = opt("", help="API server URL (default: in-cluster service account, or kubeconfig)")
    kubeconfig: str = opt("", help="kubeconfig file (its current context) instead of in-cluster config")
    node: str = opt("", help="node whose pods are watched (default $NODE_NAME; none: all pods, warned)")
    labels: list[str] = opt(factory=lambda: ["*"],
                            help="pod label keys (globs) copied to kubernetes.labels; [] = none")
    annotations: list[str] = opt(factory=list,
                                 help="pod annotation keys (globs) copied to kubernetes.annotations")
    namespace_labels: list[str] = opt(factory=lambda: ["*"],
                                      help="namespace label keys (globs) copied to "
                                           "kubernetes.namespace_labels")
    deleted_grace_secs: float = opt(300.0, min=0,
                                    help="a deleted pod's metadata is kept this long for its last lines")
    wait_for_metadata_ms: int = opt(2000, min=0,
                                    help="a file of an unknown pod waits this long for the watch, then "
                                         "ships flagged no_api_metadata")
    request_timeout_secs: float = opt(30.0, min=1, help="timeout of one list request or handshake")
    retry_max_secs: float = opt(30.0, min=0.1, help="longest wait between attempts after an API error")

    def check(self, at: str) -> list[tuple[str, str]]:
        """Problems the types alone do not catch: (key path, what)."""
        problems = []
        if self.api_url and not self.api_url.startswith(("http://", "https://")):
            problems.append((f"{at}.api_url", f"expected an http:// or https:// URL, got {self.api_url!r}"))
        if self.api_url and self.kubeconfig:
            problems.append((f"{at}.kubeconfig", "expected either api_url or kubeconfig, got both"))
        for key in ("labels", "annotations", "namespace_labels"):
            for i, glob in enumerate(getattr(self, key)):
                if not glob.strip():
                    problems.append((f"{at}.{key}[{i}]", f"expected a key or a glob, got {glob!r}"))
        return problems
