"""Credentials out of what bertops writes: the user and password of a URL, and secret query values.

A tracking URI such as ``https://user:token@mlflow.example`` or ``...?token=abc`` is a task
input, and the local runner logs every task's inputs; the run log and the terminal get the
URL with its credentials replaced by ``***``.
"""

from __future__ import annotations

import re

MASK = "***"

# scheme://userinfo@ : userinfo stops at the first '/', so an '@' further down a path is kept.
_USERINFO = re.compile(r"(?P<scheme>\b[a-zA-Z][a-zA-Z0-9+.-]*://)(?P<userinfo>[^/\s@'\"<>]+)@")
# ?name=value or &name=value where the name says it holds a secret.
_SECRET_PARAM = re.compile(
    r"(?P<name>[?&;][\w.-]*(?:token|secret|passw(?:or)?d|pwd|api[_-]?key|access[_-]?key|signature|sig|"
    r"credential|auth)[\w.-]*=)(?P<value>[^&;#\s'\"<>]+)",
    re.IGNORECASE,
)


def redact_credentials(text: str) -> str:
    """``text`` with the userinfo of every URL and every secret-named query value masked."""
    text = _USERINFO.sub(lambda m: f"{m['scheme']}{MASK}@", text)
    return _SECRET_PARAM.sub(lambda m: f"{m['name']}{MASK}", text)
