#!/usr/bin/python
# The HTTP health wait, run on the host by ansible-playbook: the same meaning as in opsconsole's
# native runner (there the request is made from the console, through the host's tunnel).
from __future__ import annotations

DOCUMENTATION = r"""
module: health
short_description: Wait until a URL answers an HTTP status
options:
  url: {description: The URL to ask., type: str, required: true}
  status: {description: The status that counts as healthy., type: int, default: 200}
  timeout: {description: How long to keep asking (30, 30s, 1m30s, 250ms)., type: str, default: "30"}
"""

import re
import time
import urllib.error
import urllib.request

from ansible.module_utils.basic import AnsibleModule

_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h)")
_UNIT = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def seconds(text: str) -> float:
    """opsconsole's durations: a number of seconds or parts like 1m30s."""
    text = str(text).strip()
    try:
        return float(text)
    except ValueError:
        pass
    parts = _PART.findall(text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise ValueError(f"{text!r} is not a duration like 30, 30s, 1m30s or 250ms")
    return sum(float(n) * _UNIT[u] for n, u in parts)


def main() -> None:
    module = AnsibleModule(
        argument_spec=dict(url=dict(type="str", required=True), status=dict(type="int", default=200),
                           timeout=dict(type="str", default="30")),
        # As uri: under --check it is skipped (the service it asks about was not restarted), never waited on.
        supports_check_mode=False,
    )
    url, want = module.params["url"], module.params["status"]
    try:
        timeout = seconds(module.params["timeout"])
    except ValueError as exc:
        module.fail_json(msg=f"timeout: {exc}")
    deadline, last = time.monotonic() + timeout, "not tried"
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                code = response.status
        except urllib.error.HTTPError as exc:
            code = exc.code
        except (urllib.error.URLError, OSError) as exc:
            code, last = None, str(getattr(exc, "reason", exc))
        if code == want:
            module.exit_json(changed=False, status=code, msg=f"{url} answered {want}")
        if code is not None:
            last = f"status {code}"
        if time.monotonic() >= deadline:
            module.fail_json(msg=f"{url}: timed out after {timeout:g}s (last: {last})")
        time.sleep(0.2)


if __name__ == "__main__":
    main()
