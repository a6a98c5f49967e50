"""HTTP for the `uri` and `get_url` modules: one request, Ansible's status and checksum rules.

Kept apart from modules.py (which wraps these as modules) so the HTTP details stay small and readable.
"""

from __future__ import annotations

import hashlib
import json
import time
import urllib.parse
from dataclasses import dataclass
from typing import Any, Mapping

import httpx

from opsconsole.errors import OperatorError

CHECKSUM_ALGORITHMS = ("md5", "sha1", "sha224", "sha256", "sha384", "sha512")


@dataclass
class Response:
    status: int
    url: str  # after redirects
    content: bytes
    headers: Mapping[str, str]
    redirected: bool
    elapsed: float


class WebFailure(OperatorError):
    """The request could not be made or answered (connection refused, TLS, timeout); the message says which.
    The modules turn it into a failed task; should one escape, it is the operator's to read, not a crash."""


async def request(url: str, *, method: str = "GET", body: Any = None, body_format: str = "raw",
                  headers: Mapping[str, str] | None = None, timeout: float = 30, verify: Any = True,
                  follow_redirects: bool = True) -> Response:
    """One HTTP request as Ansible's uri makes it: a mapping body is sent as JSON or a form by body_format."""
    headers = {str(k): str(v) for k, v in (headers or {}).items()}
    content: bytes | None = None
    if body is not None:
        if body_format == "json":
            content = (body if isinstance(body, str) else json.dumps(body)).encode()
            headers.setdefault("Content-Type", "application/json")
        elif body_format == "form-urlencoded":
            content = (urllib.parse.urlencode(body) if isinstance(body, Mapping) else str(body)).encode()
            headers.setdefault("Content-Type", "application/x-www-form-urlencoded")
        else:
            content = body if isinstance(body, bytes) else str(body).encode()
    started = time.monotonic()
    try:
        async with httpx.AsyncClient(timeout=timeout, trust_env=False, verify=verify,
                                     follow_redirects=follow_redirects) as client:
            answer = await client.request(method, url, content=content, headers=headers)
    except httpx.HTTPError as exc:
        raise WebFailure(f"Request failed: {type(exc).__name__}: {exc}" if str(exc) else
                         f"Request failed: {type(exc).__name__}") from None
    return Response(status=answer.status_code, url=str(answer.url), content=answer.content,
                    headers=dict(answer.headers), redirected=bool(answer.history),
                    elapsed=time.monotonic() - started)


def result_of(response: Response, return_content: bool) -> dict[str, Any]:
    """uri's return values: status, url, redirected, elapsed, msg, each response header (lower case, `-` as
    `_`), and with return_content the content (and json when the answer is JSON)."""
    result: dict[str, Any] = {k.lower().replace("-", "_"): v for k, v in response.headers.items()}
    result.update(status=response.status, url=response.url, redirected=response.redirected,
                  elapsed=int(response.elapsed), msg=f"OK ({len(response.content)} bytes)")
    if return_content:
        text = response.content.decode("utf-8", errors="replace")
        result["content"] = text
        if "json" in response.headers.get("content-type", ""):
            try:
                result["json"] = json.loads(text)
            except ValueError:
                pass
    return result


def expected_statuses(value: Any) -> list[int]:
    """uri's status_code: one code or a list of them (default 200). ValueError if one is not a number."""
    values = value if isinstance(value, list) else str(value if value is not None else 200).split(",")
    return [int(str(v).strip()) for v in values]


def parse_checksum(value: str) -> tuple[str, str]:
    """get_url's `checksum: ALGORITHM:HEX` as (algorithm, hex). ValueError naming what is wrong."""
    algorithm, sep, digest = str(value).partition(":")
    if not sep or algorithm not in CHECKSUM_ALGORITHMS or not digest.strip():
        raise ValueError(f"{value!r} is not a checksum like sha256:HEX (algorithms: {', '.join(CHECKSUM_ALGORITHMS)})")
    return algorithm, digest.strip().lower()


def digest(algorithm: str, content: bytes) -> str:
    return hashlib.new(algorithm, content).hexdigest()


def file_name(url: str) -> str:
    """The file name get_url gives a download into a directory: the URL path's last part."""
    return urllib.parse.unquote(urllib.parse.urlsplit(url).path.rstrip("/").rsplit("/", 1)[-1]) or "index.html"


__all__ = ["CHECKSUM_ALGORITHMS", "Response", "WebFailure", "digest", "expected_statuses", "file_name",
           "parse_checksum", "request", "result_of"]
