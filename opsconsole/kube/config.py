'''The `kubernetes:` mapping of a host group with `provider: kubernetes`.

```yaml
groups:
  web:
    provider: kubernetes
    kubernetes:
      namespace: checkbox           # default: "default"
      context: lab                  # kubeconfig context; default: the current one
      kubeconfig: ~/.kube/lab.yaml  # default: as kubectl: $KUBECONFIG, else ~/.kube/config, else in-cluster
      replicas: 2                   # the stable Deployment's
      port: 3002                    # the container port the app listens on (and the Service targets)
      service_port: 80              # the Service's port (default: `port`)
      progress_deadline: 10m        # progressDeadlineSeconds: a rollout not progressing this long failed
      env:
        NODE_ENV: production
        MONGO_PASSWORD: {secret: checkbox-db, key: password}   # by reference: the value never leaves the cluster
      resources:
        requests: {cpu: 100m, memory: 128Mi}
        limits: {memory: 256Mi}
apps:
  checkbox:
    group: web
    image: registry.example/checkbox:{{ version }}
```
'''

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from opsconsole.config.reader import MappingReader

# RFC 1123 labels: what Kubernetes accepts as a namespace, and as a Secret or object name.
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")
_ENV_NAME = re.compile(r"^[-._a-zA-Z][-._a-zA-Z0-9]*$")
_QUANTITY = re.compile(r"^[0-9]+(\.[0-9]+)?(m|k|Ki|M|Mi|G|Gi|T|Ti|P|Pi|E|Ei|e[0-9]+)?$")
_RESOURCE_KINDS = ("requests", "limits")
_RESOURCE_NAMES = ("cpu", "memory", "ephemeral-storage")


@dataclass(frozen=True)
class SecretRef:
    """An env value read from a Secret key by the kubelet: opsconsole never sees the value."""

    secret: str
    key: str


@dataclass(frozen=True)
class KubeGroupConfig:
    namespace: str | None = None  # None: "default"
    context: str | None = None  # None: the kubeconfig's current context
    kubeconfig: str | None = None  # None: as kubectl ($KUBECONFIG, ~/.kube/config, in-cluster)
    replicas: int = 1
    port: int = 8080
    service_port: int | None = None  # None: `port`
    progress_deadline: int = 600  # seconds, progressDeadlineSeconds
    env: dict[str, str | SecretRef] = field(default_factory=dict)
    resources: dict[str, dict[str, str]] = field(default_factory=dict)


def parse_kubernetes_section(r: MappingReader, kubeconfig_path: str | None) -> KubeGroupConfig:
    """Read a group's `kubernetes:` mapping; SourceError names the file, line and key at fault.

    `kubeconfig_path` is the `kubeconfig` key already resolved against the config file's directory.
    """
    namespace = r.str("namespace")
    if namespace is not None and not _DNS_LABEL.match(namespace):
        raise r.error("namespace", f"{namespace!r} is not a valid namespace (lower-case letters, digits and '-', "
                                   "at most 63, starting and ending with a letter or digit)")
    context = r.str("context")
    r.str("kubeconfig")  # resolved by the caller, which knows the config file's directory
    config = KubeGroupConfig(
        namespace=namespace, context=context, kubeconfig=kubeconfig_path,
        replicas=r.int("replicas", default=1, minimum=0, maximum=1000),
        port=r.port("port", default=8080), service_port=r.port("service_port"),
        progress_deadline=int(r.duration("progress_deadline", default=600.0, minimum=1.0)),
        env=_env(r.mapping("env")), resources=_resources(r.mapping("resources")),
    )
    r.done()
    return config


def _env(e: MappingReader) -> dict[str, str | SecretRef]:
    env: dict[str, str | SecretRef] = {}
    for name in list(e.data):
        if not isinstance(name, str) or not _ENV_NAME.match(name):
            raise e.error(str(name), f"{name!r} is not a valid environment variable name")
        value: Any = e.raw(name)
        if isinstance(value, dict):
            ref = e.mapping(name)
            secret = ref.str("secret", required=True)
            if not _DNS_SUBDOMAIN.match(secret):
                raise ref.error("secret", f"{secret!r} is not a valid Secret name")
            env[name] = SecretRef(secret=secret, key=ref.str("key", required=True))
            ref.done()
        elif isinstance(value, (str, int, float)) and not isinstance(value, bool):
            env[name] = str(value)
        else:
            raise e.error(name, "must be a text value or a Secret reference {secret: NAME, key: KEY}")
    return env


def _resources(res: MappingReader) -> dict[str, dict[str, str]]:
    out: dict[str, dict[str, str]] = {}
    for kind in _RESOURCE_KINDS:
        if not res.has(kind):
            continue
        section = res.mapping(kind)
        values: dict[str, str] = {}
        for name in _RESOURCE_NAMES:
            if section.has(name):
                raw = section.raw(name)
                text = str(raw)
                if isinstance(raw, bool) or not _QUANTITY.match(text):
                    raise section.error(name, f"{text!r} is not a Kubernetes quantity (e.g. 100m, 0.5, 128Mi)")
                values[name] = text
        section.done()
        out[kind] = values
    res.done()
    return out
