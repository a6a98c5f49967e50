"""The environment a command run on a host sees of this machine's: what a login would give it, no more.

A command over SSH gets the remote user's login environment, never the console's. A host of the local
provider is this machine, so its commands and services would otherwise inherit everything the console
was started with: AWS keys, SSH_AUTH_SOCK, the proxy token, database passwords. The code they run is
what anyone who can push to the branch wrote, so they get the same allow-list a build gets.
"""

from __future__ import annotations

import os
import re
from collections.abc import Collection, Mapping

# Enough for compilers, package managers, git and apps to find their tools, home, locale, time zone and
# scratch space.
ALLOWED = ("PATH", "HOME", "USER", "LOGNAME", "SHELL", "LANG", "LANGUAGE", "TZ", "TMPDIR", "TERM")
PREFIXES = ("LC_",)
# What a shell accepts as a variable name. A config key that names a variable (token_env, a secret's env)
# must be one: a token pasted there instead would otherwise be echoed back in every "not set" message.
ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
NOT_AN_ENV_NAME = "must name an environment variable (letters, digits and _, not starting with a digit), not hold a value"


def login_environment(environ: Mapping[str, str] | None = None, also: Collection[str] = ()) -> dict[str, str]:
    """The allowed part of `environ` (this process's by default), plus the names in `also`."""
    environ = os.environ if environ is None else environ
    return {name: value for name, value in environ.items()
            if name in ALLOWED or name.startswith(PREFIXES) or name in also}
