"""What mochi lets git reach: the remote URL policy, credential redaction, and the error type that applies it.

``validate_remote_url`` is mochi's own policy; GitPython's unsafe-protocol and unsafe-option guards
(left on) and ``GIT_ALLOW_PROTOCOL`` on every git process (see ``git_connector``) stand behind it.
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit

ALLOWED_SCHEMES = ("https", "http", "ssh", "git", "file")
# scp-like syntax git accepts for ssh: user@host:path (no "//" right after the colon).
_SCP_LIKE = re.compile(r"^[A-Za-z0-9._~+-]+@[A-Za-z0-9][A-Za-z0-9.-]*:(?!//)\S+$")
# Git's own `<transport>::<address>` syntax (ext::, fd::, remote helpers): never allowed.
_TRANSPORT_PREFIX = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*::")
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")
_CREDENTIALS = re.compile(r"(://)[^/\s@]+@")


def redact(text: str) -> str:
    """``text`` with the user/password/token part of any URL in it replaced by ``***``."""
    return _CREDENTIALS.sub(r"\1***@", text)


class GitError(RuntimeError):
    """A git problem worded for the person running mochi: what failed and how to fix it.

    Credentials in URLs (``https://user:token@host``) never reach the message, so never a log.
    ``retryable``: a clone, fetch or timeout that may work later (the network); other errors need a fix.
    """

    def __init__(self, message: str, retryable: bool = False) -> None:
        super().__init__(redact(message))
        self.retryable = retryable


def is_remote_source(source: str) -> bool:
    """True when ``repo.source`` names a remote (URL, scp-like, or a git transport), not a local path."""
    s = source.strip()
    return bool(_SCHEME.match(s) or _TRANSPORT_PREFIX.match(s) or _SCP_LIKE.match(s))


def url_fix() -> str:
    """The sentence that tells the user which URLs are accepted."""
    return f"Use one of {', '.join(s + '://' for s in ALLOWED_SCHEMES)} or user@host:path."


def validate_remote_url(url: str) -> str:
    """Return ``url`` if it is safe to hand to ``git clone``; raise ``GitError`` otherwise."""
    fix = url_fix()
    if not url:
        raise GitError("repo.source is empty. Set it to a local path or a remote URL.")
    if url.startswith("-"):
        raise GitError(f"Refusing repository URL {url!r}: it starts with '-' and git could read it as an option. {fix}")
    transport = _TRANSPORT_PREFIX.match(url)
    if transport:
        raise GitError(
            f"Refusing repository URL {url!r}: the {transport.group(0)} transport can run commands or open "
            f"arbitrary descriptors. {fix}"
        )
    if any(ch.isspace() or ord(ch) < 0x20 or ord(ch) == 0x7F for ch in url):
        raise GitError(f"Refusing repository URL {url!r}: it contains whitespace or control characters. {fix}")
    scheme = _SCHEME.match(url)
    if scheme:
        name = scheme.group(1).lower()
        if name not in ALLOWED_SCHEMES:
            raise GitError(f"Refusing repository URL {url!r}: scheme {name!r} is not allowed. {fix}")
        host = urlsplit(url).hostname or ""
        if host.startswith("-"):
            raise GitError(f"Refusing repository URL {url!r}: host {host!r} starts with '-'. {fix}")
        if name != "file" and not host:
            raise GitError(f"Repository URL {url!r} has no host. {fix}")
        return url
    if _SCP_LIKE.match(url):
        return url
    raise GitError(f"{url!r} is not a repository URL git can clone safely. {fix}")
