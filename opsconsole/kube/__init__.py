"""Kubernetes as a deploy target: the group section, the manifests and the API client."""
