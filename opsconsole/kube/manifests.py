"""The objects opsconsole applies for an app on a kubernetes group, built from the config.

A stable Deployment, a canary Deployment (0 replicas until a canary is deployed) and one Service per
track, so a traffic proxy in front can weigh the two tracks' endpoints exactly. `manifests APP`
prints these documents; `apply APP` sends the same dicts, so what is printed is what is applied.

An app may instead name a directory of Jinja2 templates (`manifests: DIR`): every *.yaml, *.yml and *.j2
file in it, in name order, rendered with `TEMPLATE_VARIABLES` (undefined ones are errors). `roll` and
the canary then take their Deployments from there (named as the generated ones: NAME and NAME-canary)
and set only what they steer: the replicas and the rolling-update strategy.
"""

from __future__ import annotations

from typing import Any

import jinja2
import yaml

from opsconsole.config.model import AppConfig, GroupConfig
from opsconsole.errors import OperatorError
from opsconsole.kube.config import KubeGroupConfig, SecretRef

MANAGER = "opsconsole"  # the server-side apply field manager, and the managed-by label
NAME_LABEL = "app.kubernetes.io/name"
TRACK_LABEL = "opsconsole.dev/track"  # stable | canary: the selectors keep the tracks apart
VERSION_LABEL = "app.kubernetes.io/version"
TRACKS = ("stable", "canary")


class ManifestError(OperatorError):
    """The config cannot make a valid manifest (e.g. an image template that does not render)."""


TEMPLATE_SUFFIXES = (".yaml", ".yml", ".j2")
TEMPLATE_VARIABLES = ("app", "name", "version", "image", "namespace", "replicas", "port", "service_port", "health_path")
# Kinds with no namespace: every other object of a template without one goes to the group's namespace.
_CLUSTER_SCOPED = {"Namespace", "ClusterRole", "ClusterRoleBinding", "PersistentVolume", "StorageClass",
                   "CustomResourceDefinition", "PriorityClass", "IngressClass"}


def kube_section(group: GroupConfig) -> KubeGroupConfig:
    if group.kubernetes is None:
        raise ManifestError(f"group {group.name!r} is not a kubernetes group (provider: {group.provider})")
    return group.kubernetes


def deployment_name(app: AppConfig, track: str = "stable") -> str:
    return app.service_name if track == "stable" else f"{app.service_name}-{track}"


def image_for(app: AppConfig, version: str) -> str:
    """The app's `image:` template rendered with `version` (StrictUndefined: a typo is an error, not '')."""
    try:
        return jinja2.Environment(undefined=jinja2.StrictUndefined).from_string(app.image or "").render(
            version=version, app=app.name)
    except jinja2.TemplateError as exc:
        raise ManifestError(f"apps.{app.name}.image: cannot render {app.image!r}: {exc}") from None


def version_of_image(image: str) -> str:
    """The tag of an image reference ('' when it has none): the version a pod runs."""
    name = image.rsplit("/", 1)[-1]
    return name.split(":", 1)[1].split("@", 1)[0] if ":" in name else ""


def _labels(app: AppConfig, track: str) -> dict[str, str]:
    return {NAME_LABEL: app.service_name, TRACK_LABEL: track}


def _container(app: AppConfig, kube: KubeGroupConfig, image: str) -> dict[str, Any]:
    env: list[dict[str, Any]] = []
    for name, value in kube.env.items():
        if isinstance(value, SecretRef):
            env.append({"name": name, "valueFrom": {"secretKeyRef": {"name": value.secret, "key": value.key}}})
        else:
            env.append({"name": name, "value": value})
    container: dict[str, Any] = {
        "name": app.service_name, "image": image,
        "ports": [{"name": "http", "containerPort": kube.port, "protocol": "TCP"}],
    }
    if env:
        container["env"] = env
    if kube.resources:
        container["resources"] = {kind: dict(values) for kind, values in kube.resources.items()}
    health = app.health
    probe_port: int | str = health.port or "http"
    handler: dict[str, Any] = ({"httpGet": {"path": health.path, "port": probe_port}} if health.kind == "http"
                               else {"tcpSocket": {"port": probe_port}})
    container["readinessProbe"] = {**handler, "timeoutSeconds": max(1, int(round(health.timeout))),
                                   "periodSeconds": 2, "failureThreshold": health.fall or 3}
    return container


def deployment(app: AppConfig, group: GroupConfig, version: str, *, track: str = "stable",
               replicas: int | None = None, max_unavailable: int | str = "25%",
               max_surge: int | str = "25%") -> dict[str, Any]:
    kube = kube_section(group)
    if app.manifests_dir is not None:
        return _template_deployment(app, group, version, track, replicas, max_unavailable, max_surge)
    image = image_for(app, version)
    labels = _labels(app, track)
    if replicas is None:
        replicas = kube.replicas if track == "stable" else 0
    return {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": deployment_name(app, track), "namespace": namespace_of(kube),
                     "labels": {**labels, "app.kubernetes.io/managed-by": MANAGER}},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": labels},
            "progressDeadlineSeconds": kube.progress_deadline,
            "revisionHistoryLimit": 10,
            "strategy": {"type": "RollingUpdate",
                         "rollingUpdate": {"maxUnavailable": max_unavailable, "maxSurge": max_surge}},
            "template": {
                "metadata": {"labels": {**labels, VERSION_LABEL: _label_value(version_of_image(image) or version)}},
                "spec": {"containers": [_container(app, kube, image)]},
            },
        },
    }


def service(app: AppConfig, group: GroupConfig, track: str = "stable") -> dict[str, Any]:
    kube = kube_section(group)
    return {
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": deployment_name(app, track), "namespace": namespace_of(kube),
                     "labels": {**_labels(app, track), "app.kubernetes.io/managed-by": MANAGER}},
        "spec": {"type": "ClusterIP", "selector": _labels(app, track),
                 "ports": [{"name": "http", "port": kube.service_port or kube.port, "targetPort": "http",
                            "protocol": "TCP"}]},
    }


def app_manifests(app: AppConfig, group: GroupConfig, version: str) -> list[dict[str, Any]]:
    """Everything `apply APP` sends, in the order it is sent."""
    if app.manifests_dir is not None:
        return render_templates(app, group, version)
    return [deployment(app, group, version, track="stable"), deployment(app, group, version, track="canary"),
            service(app, group, "stable"), service(app, group, "canary")]


def to_yaml(documents: list[dict[str, Any]]) -> str:
    """Multi-document YAML, like `helm template`."""
    return yaml.safe_dump_all(documents, sort_keys=False, explicit_start=True)


def namespace_of(kube: KubeGroupConfig) -> str:
    return kube.namespace or "default"


def _label_value(text: str) -> str:
    """A label value (63 characters of [-A-Za-z0-9_.], alphanumeric at both ends): a commit hash fits."""
    cleaned = "".join(c if c.isalnum() or c in "-_." else "-" for c in text)[:63].strip("-_.")
    return cleaned


def template_context(app: AppConfig, group: GroupConfig, version: str) -> dict[str, Any]:
    kube = kube_section(group)
    return {"app": app.name, "name": app.service_name, "version": version, "image": image_for(app, version),
            "namespace": namespace_of(kube), "replicas": kube.replicas, "port": kube.port,
            "service_port": kube.service_port or kube.port, "health_path": app.health.path}


def render_templates(app: AppConfig, group: GroupConfig, version: str) -> list[dict[str, Any]]:
    """The app's template directory rendered: ManifestError naming the file (and line) at fault."""
    directory = app.manifests_dir
    assert directory is not None
    where = f"apps.{app.name}.manifests"
    files = sorted(p for p in directory.iterdir() if p.is_file() and p.name.endswith(TEMPLATE_SUFFIXES))
    if not files:
        raise ManifestError(f"{where}: no templates ({', '.join('*' + s for s in TEMPLATE_SUFFIXES)}) in {directory}")
    env = jinja2.Environment(undefined=jinja2.StrictUndefined, loader=jinja2.FileSystemLoader(str(directory)),
                             keep_trailing_newline=True, autoescape=False)
    context = template_context(app, group, version)
    documents: list[dict[str, Any]] = []
    for file in files:
        try:
            text = env.get_template(file.name).render(**context)
        except jinja2.TemplateError as exc:
            line = getattr(exc, "lineno", None)
            raise ManifestError(f"{file}{f':{line}' if line else ''}: {exc} "
                                f"(variables: {', '.join(TEMPLATE_VARIABLES)})") from None
        try:
            loaded = list(yaml.safe_load_all(text))
        except yaml.YAMLError as exc:
            raise ManifestError(f"{file}: the rendered template is not YAML: {' '.join(str(exc).split())}") from None
        for i, doc in enumerate(loaded):
            if doc is None:
                continue
            if not (isinstance(doc, dict) and doc.get("apiVersion") and doc.get("kind")
                    and isinstance(doc.get("metadata"), dict) and doc["metadata"].get("name")):
                raise ManifestError(f"{file}: document {i + 1} is not a Kubernetes object "
                                    "(it needs apiVersion, kind and metadata.name)")
            if doc["kind"] not in _CLUSTER_SCOPED:
                doc["metadata"].setdefault("namespace", context["namespace"])
            documents.append(doc)
    return documents


def _template_deployment(app: AppConfig, group: GroupConfig, version: str, track: str, replicas: int | None,
                         max_unavailable: int | str, max_surge: int | str) -> dict[str, Any]:
    name = deployment_name(app, track)
    for doc in render_templates(app, group, version):
        if doc["kind"] == "Deployment" and doc["metadata"]["name"] == name:
            spec = doc.setdefault("spec", {})
            if replicas is not None:
                spec["replicas"] = replicas
            elif track != "stable":
                spec["replicas"] = 0  # a canary runs no pod until it is deployed
            spec["strategy"] = {"type": "RollingUpdate",
                                "rollingUpdate": {"maxUnavailable": max_unavailable, "maxSurge": max_surge}}
            return doc
    raise ManifestError(f"apps.{app.name}.manifests: no Deployment named {name} in {app.manifests_dir} "
                        f"(roll and the canary need {deployment_name(app)} and {deployment_name(app, 'canary')})")
