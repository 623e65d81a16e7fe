"""Secrets and personal data out of every text mochi learns from, before anything is generated.

Detection is detect-secrets' maintained plugins (cloud keys, GitHub/GitLab/Slack/Stripe/OpenAI/npm/
PyPI/… tokens, private keys, JWTs, basic-auth URLs, secret-looking assignments, high-entropy strings
in config files, public IP addresses) with its false-positive heuristics, never its network
verification, plus what it lacks: newer token formats (GitHub fine-grained, OpenAI project,
Anthropic, Google API, Stripe test keys), whole private-key blocks (PEM, and JSON-escaped inside
credential files), passwords in connection strings, e-mail addresses and phone numbers. The
token patterns run over the whole text at once; the keyword and entropy rules only on the lines
that name a secret-sounding keyword or sit in a config file, so scanning a large corpus costs a
few regular-expression passes.

Each hit is replaced by a typed placeholder (``<SECRET:aws_access_key>``, ``<EMAIL>``): the same
for every value of a type, so code that repeats a value stays consistent. Files that are nothing
but secrets (``.env``, key files, credential JSON) are dropped whole with a counted reason.
"""

from __future__ import annotations

import bisect
import ipaddress
import math
import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache

from detect_secrets.filters import heuristic
from detect_secrets.plugins import (
    artifactory,
    aws,
    azure_storage_key,
    basic_auth,
    discord,
    github_token,
    gitlab_token,
    high_entropy_strings,
    ip_public,
    jwt,
    keyword,
    mailchimp,
    npm,
    openai,
    private_key,
    pypi_token,
    sendgrid,
    slack,
    square_oauth,
    stripe,
    telegram_token,
    twilio,
)
from detect_secrets.util.filetype import determine_file_type

from mochi_pipeline.ingestion.source_loader import glob_match
from mochi_pipeline.preprocessing.settings import ScrubSettings

# detect-secrets plugin -> the placeholder's type name, and strings one of which a text must contain for the
# plugin's patterns to be worth running (None: always run). A substring test is a memchr; a pattern is not.
_PLUGIN_TYPES = {
    artifactory.ArtifactoryDetector: "artifactory_token",
    aws.AWSKeyDetector: "aws_access_key",
    azure_storage_key.AzureStorageKeyDetector: "azure_storage_key",
    basic_auth.BasicAuthDetector: "password",
    discord.DiscordBotTokenDetector: "discord_token",
    github_token.GitHubTokenDetector: "github_token",
    gitlab_token.GitLabTokenDetector: "gitlab_token",
    jwt.JwtTokenDetector: "jwt",
    mailchimp.MailchimpDetector: "mailchimp_key",
    npm.NpmDetector: "npm_token",
    openai.OpenAIDetector: "openai_key",
    private_key.PrivateKeyDetector: "private_key",
    pypi_token.PypiTokenDetector: "pypi_token",
    sendgrid.SendGridDetector: "sendgrid_key",
    slack.SlackDetector: "slack_token",
    square_oauth.SquareOAuthDetector: "square_secret",
    stripe.StripeDetector: "stripe_key",
    telegram_token.TelegramBotTokenDetector: "telegram_token",
    twilio.TwilioKeyDetector: "twilio_key",
}
_HINTS: dict[type, tuple[str, ...] | None] = {
    artifactory.ArtifactoryDetector: ("AKC", "AP"),
    aws.AWSKeyDetector: ("AKIA", "ASIA", "ABIA", "ACCA", "A3T", "aws", "AWS", "Aws"),
    azure_storage_key.AzureStorageKeyDetector: ("AccountKey",),
    basic_auth.BasicAuthDetector: ("://",),
    github_token.GitHubTokenDetector: ("gh",),
    gitlab_token.GitLabTokenDetector: ("gl", "GR1348941"),
    jwt.JwtTokenDetector: ("eyJ",),
    mailchimp.MailchimpDetector: ("-us",),
    npm.NpmDetector: ("_authToken",),
    openai.OpenAIDetector: ("T3BlbkFJ",),
    private_key.PrivateKeyDetector: ("PRIVATE KEY", "PuTTY"),
    pypi_token.PypiTokenDetector: ("pypi-",),
    sendgrid.SendGridDetector: ("SG.",),
    slack.SlackDetector: ("xox", "hooks.slack"),
    square_oauth.SquareOAuthDetector: ("sq0csp-",),
    stripe.StripeDetector: ("_live_",),
    telegram_token.TelegramBotTokenDetector: (":",),
    twilio.TwilioKeyDetector: ("AC", "SK"),
}
# What detect-secrets lacks (checked 1.5.0): a pattern, the group holding the secret, the type, and hints as above.
_EXTRA: list[tuple[re.Pattern[str], int, str, tuple[str, ...] | None]] = [
    (re.compile(r"github_pat_[A-Za-z0-9_]{60,}"), 0, "github_token", ("github_pat_",)),
    (re.compile(r"sk-ant-[A-Za-z0-9_-]{20,}"), 0, "anthropic_key", ("sk-ant-",)),
    (re.compile(r"sk-(?:proj-|svcacct-|admin-)?[A-Za-z0-9_-]{32,}"), 0, "openai_key", ("sk-",)),
    (re.compile(r"AIza[0-9A-Za-z_-]{35}"), 0, "gcp_api_key", ("AIza",)),
    (re.compile(r"GOCSPX-[0-9A-Za-z_-]{28}"), 0, "gcp_client_secret", ("GOCSPX-",)),
    (re.compile(r"[rs]k_test_[0-9a-zA-Z]{24,}"), 0, "stripe_key", ("k_test_",)),
    (re.compile(r"xox[abposr]-[0-9A-Za-z-]{10,}"), 0, "slack_token", ("xox",)),
    (re.compile(r"https://hooks\.slack\.com/services/[A-Za-z0-9/]+"), 0, "slack_webhook", ("hooks.slack.com",)),
    (re.compile(r"A(?:KIA|SIA|BIA|CCA)[0-9A-Z]{16}(?![0-9A-Z])"), 0, "aws_access_key",
     ("AKIA", "ASIA", "ABIA", "ACCA")),
    (re.compile(r"eyJ[\w-]{8,}\.eyJ[\w-]{8,}\.[\w-]+"), 0, "jwt", ("eyJ",)),  # the whole token, signature included
    # user:password@ in any URL-like connection string (postgres://, redis://, amqp://, mongodb+srv://, ...)
    (re.compile(r"://[^\s:/@'\"]+:([^\s@/'\"]{3,})@"), 1, "password", ("://",)),
]
# Secret-sounding names detect-secrets' keyword list lacks (token, access/storage/signing key, credential, bearer),
# assigned a quoted value that looks random (see _random_enough): a token, not a word. The names are found by a
# substring search of the lower-cased text (a case-insensitive alternation over all of it is the slowest pass),
# then the assignment is matched right after each.
_SECRET_NAMES = tuple(sorted({w.replace("_?", sep) for w in ("token", "access_?key", "storage_?key", "signing_?key",
                                                               "secret_?key", "api_?secret", "credential", "bearer")
                              for sep in ("", "_")}))
_ASSIGNED_VALUE = re.compile(r"[A-Za-z0-9_-]*['\"]?\s*[:=]\s*['\"]([^'\"\s]{16,})['\"]")
# In a config file the value needs no quotes (YAML `api_token: 9f8e...`, INI, env files).
_ASSIGNED_VALUE_UNQUOTED = re.compile(r"[A-Za-z0-9_-]*['\"]?[ \t]*[:=][ \t]*([^'\"\s,;#]{16,})[ \t]*$", re.M)
# A name, not a password: an environment variable's (MOCHI_API_KEY) or words joined by _ or - (secret_file).
# benchmarks/secrets.py found these behind most of the keyword rule's hits in real code.
_IDENTIFIER = re.compile(r"[A-Z][A-Z0-9]*(?:_[A-Z0-9]+)+|[a-z]+(?:[_-][a-z]+)+")
_PLACEHOLDER = re.compile(r"<(?:SECRET:[a-z0-9_]+|EMAIL|IP_ADDRESS|PHONE)>")
_PEM_BLOCK = re.compile(
    r"-----BEGIN ((?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?)-----.*?-----END \1-----", re.S
)
_EMAIL = re.compile(r"(?<![\w.+-])[A-Za-z0-9][A-Za-z0-9._%+-]*@(?:[A-Za-z0-9-]+\.)+[A-Za-z]{2,}(?![\w-])")
# A phone number needs a + prefix or (area) code: bare digit runs are far too common in code.
_PHONE = re.compile(r"(?<![\w+])(?:\+\d{1,3}[ .-]?(?:\(\d{1,4}\)[ .-]?)?\d{2,4}[ .-]\d{2,4}[ .-]?\d{2,4}"
                    r"|\(\d{3}\) ?\d{3}-\d{4})(?![\w])")
# Addresses that identify nobody (documentation, tooling).
_IMPERSONAL_EMAIL = re.compile(
    r"@(?:example\.(?:com|org|net)|localhost|users\.noreply\.github\.com)$|^(?:noreply|no-reply)@", re.I)
_SERVICE_ACCOUNT = re.compile(r'"type"\s*:\s*"service_account"|"private_key"\s*:\s*"-----BEGIN')
# A PEM block written on one line with escaped newlines (credential JSON, env files).
_ESCAPED_PEM = re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----[^\"'\n]*?-----END [A-Z ]*PRIVATE KEY-----")
# What every IPv4 address contains: a cheap test before detect-secrets' (much slower) address pattern.
_DOTTED_QUAD = re.compile(r"\d\.\d{1,3}\.\d{1,3}\.\d")
# A dotted quad after "version", "release", a "v" or a requirement specifier (`typing-extensions==3.10.0.2`) is a
# version number, not an address.
_VERSION_CONTEXT = re.compile(r"(?:version|release|rev)\w*\W{0,12}$|\bv$|(?:[=!~<>]=|[<>])\s*$", re.I)
_NOT_PASSWORDS = frozenset({"true", "false", "none", "null", "nil", "yes", "no", "on", "off", "required", "optional"})
# `scheme://user:` right before an address-looking `password@host`: a URL's credentials, not an e-mail.
_URL_USERINFO = re.compile(r"://[^\s/@:]*:$")


PERSONAL_TYPES = frozenset({"email", "ip_address", "phone"})


@dataclass(frozen=True)
class Finding:
    type: str  # e.g. aws_access_key, email
    start: int
    end: int

    @property
    def placeholder(self) -> str:
        return f"<{self.type.upper()}>" if self.type in PERSONAL_TYPES else f"<SECRET:{self.type}>"


@dataclass
class ScrubResult:
    text: str
    counts: Counter  # type -> replacements


@cache
def _plugins() -> list[tuple[object, str, tuple[str, ...] | None]]:
    return [(cls(), name, _HINTS.get(cls)) for cls, name in _PLUGIN_TYPES.items()]


# The keyword detector's names (api_?key, password, secret, ...) as plain lower-case strings to look for.
_KEYWORDS = tuple(sorted({w.replace("_?", sep) for w in keyword.DENYLIST for sep in ("", "_")}))


class Scrubber:
    """Finds and replaces secrets and personal data; one instance per settings, reused across texts."""

    def __init__(self, settings: ScrubSettings) -> None:
        self.settings = settings
        self.keyword = keyword.KeywordDetector()
        self.entropy = [high_entropy_strings.Base64HighEntropyString(settings.base64_entropy_limit),
                        high_entropy_strings.HexHighEntropyString(settings.hex_entropy_limit)]
        self.ip = ip_public.IPPublicDetector()
        self.allow = set(settings.allow)

    def find(self, text: str, path: str = "") -> list[Finding]:
        """Every secret and personal datum in ``text`` (from a file at ``path``), non-overlapping, in order."""
        found: list[Finding] = []
        if self.settings.secrets:
            for pattern in (_PEM_BLOCK, _ESCAPED_PEM):
                found += [Finding("private_key", m.start(), m.end()) for m in pattern.finditer(text)]
            for plugin, name, hints in _plugins():
                if hints is None or any(h in text for h in hints):
                    for regex in plugin.denylist:
                        found += [Finding(name, *span) for span in _spans(regex, text)]
            for pattern, group, name, hints in _EXTRA:
                if hints is None or any(h in text for h in hints):
                    found += [Finding(name, m.start(group), m.end(group)) for m in pattern.finditer(text)]
            config = any(glob_match(path, g) for g in self.settings.high_entropy_in)
            lowered = _lower(text)
            found += self._assignments(text, lowered, path, config)
            for pattern in (_ASSIGNED_VALUE, _ASSIGNED_VALUE_UNQUOTED) if config else (_ASSIGNED_VALUE,):
                for at in _occurrences(lowered, _SECRET_NAMES):
                    m = pattern.match(text, at)
                    if m and _random_enough(m.group(1)):
                        found.append(Finding("token", m.start(1), m.end(1)))
        if self.settings.personal_data:
            ips = _spans(self.ip.denylist[0], text) if _DOTTED_QUAD.search(text) else ()
            found += [Finding("ip_address", *span) for span in ips
                      if _global_address(text[span[0]:span[1]])
                      and not _VERSION_CONTEXT.search(text[max(0, span[0] - 40):span[0]])]
            found += [Finding("email", m.start(), m.end()) for m in _EMAIL.finditer(text)
                      if not _IMPERSONAL_EMAIL.search(m.group(0))
                      and not _URL_USERINFO.search(text[max(0, m.start() - 200):m.start()])]
            found += [Finding("phone", m.start(), m.end()) for m in _PHONE.finditer(text)
                      if sum(c.isdigit() for c in m.group(0)) >= 9]
        # Placeholders written by an earlier scrub are not findings, nor is what a rule reads into one (the YAML
        # keyword rule takes `<SECRET:token>` for `secret: token>`): a scrubbed text scans clean.
        written = [m.span() for m in _PLACEHOLDER.finditer(text)] if "<" in text else []
        return _non_overlapping([f for f in found if text[f.start:f.end] not in self.allow
                                 and not any(f.start < b and a < f.end for a, b in written)])

    def _assignments(self, text: str, lowered: str, path: str, entropy_here: bool) -> list[Finding]:
        """Values assigned to secret-sounding names, and high-entropy strings in config files, line by line
        (only the lines that need it), minus what detect-secrets' heuristics call a false positive."""
        denylist = keyword.REGEX_BY_FILETYPE.get(determine_file_type(path or "x.txt"),
                                                 keyword.QUOTES_REQUIRED_DENYLIST_REGEX_TO_GROUP)
        starts = [0, *(m.end() for m in re.finditer("\n", text))]
        if entropy_here:
            lines = range(len(starts))
        else:
            lines = sorted({bisect.bisect_right(starts, at - 1) - 1 for at in _occurrences(lowered, _KEYWORDS)})
        out: list[Finding] = []
        for n in lines:
            start = starts[n]
            line = text[start:starts[n + 1] if n + 1 < len(starts) else len(text)]
            if len(line) > self.settings.max_line_chars or heuristic.is_indirect_reference(line):
                continue
            values = [(v, "password") for v in self.keyword.analyze_string(line, denylist)]
            if entropy_here:
                values += [(v, "high_entropy_string") for plugin in self.entropy for v in plugin.analyze_string(line)
                           if plugin.calculate_shannon_entropy(v) > plugin.entropy_limit]
            for value, name in values:
                if not _plausible_secret(value) or (name == "password" and _IDENTIFIER.fullmatch(value)):
                    continue
                at = line.find(value)
                while at != -1:
                    out.append(Finding(name, start + at, start + at + len(value)))
                    at = line.find(value, at + len(value))
        return out

    def scrub(self, text: str, path: str = "") -> ScrubResult:
        """``text`` with every finding replaced by its placeholder, and the count per type."""
        findings = self.find(text, path)
        if not findings:
            return ScrubResult(text, Counter())
        parts, last = [], 0
        for f in findings:
            parts += [text[last:f.start], f.placeholder]
            last = f.end
        parts.append(text[last:])
        return ScrubResult("".join(parts), Counter(f.type for f in findings))

    def secret_file(self, path: str, text: str) -> bool:
        """Whether the file is nothing but secrets (dropped whole): env files, key files, credential JSON."""
        if any(glob_match(path, g) for g in self.settings.secret_files):
            return True
        return path.endswith(".json") and bool(_SERVICE_ACCOUNT.search(text))


def _lower(text: str) -> str:
    """``text`` lower-cased, position for position (``"İ".lower()`` is two characters: its first is kept)."""
    lowered = text.lower()
    return lowered if len(lowered) == len(text) else "".join(c.lower()[0] for c in text)


def _occurrences(lowered: str, words: tuple[str, ...]) -> Iterator[int]:
    """The position right after each occurrence of each word in ``lowered``."""
    for word in words:
        at = lowered.find(word)
        while at != -1:
            yield at + len(word)
            at = lowered.find(word, at + len(word))


def _spans(regex: re.Pattern[str], text: str) -> Iterator[tuple[int, int]]:
    """Spans of the secret in each match: the group detect-secrets reports, unless that group is only the
    token's prefix (``(ghp|gho|…)_…``), then the whole match."""
    for m in regex.finditer(text):
        groups = [g for g in range(1, regex.groups + 1) if m.group(g)]
        if not groups or (m.start(groups[0]) == m.start() and m.end(groups[0]) < m.end()):
            yield m.span()
        else:
            yield from (m.span(g) for g in groups)


def _random_enough(value: str) -> bool:
    """A generated token, not an identifier or a word: Shannon entropy of at least 3.5 bits per character, or 3.0
    for a hex string (16 symbols cap it at 4; detect-secrets' hex limit)."""
    counts = Counter(value)
    entropy = -sum(n / len(value) * math.log2(n / len(value)) for n in counts.values())
    limit = 3.0 if all(c in "0123456789abcdefABCDEF" for c in value) else 3.5
    return entropy >= limit and _plausible_secret(value)


def _global_address(value: str) -> bool:
    """A routable address (documentation ranges such as 192.0.2.0/24 and reserved ones identify nobody)."""
    try:
        return ipaddress.ip_address(value.split(":", 1)[0]).is_global
    except ValueError:
        return False


def _plausible_secret(value: str) -> bool:
    """detect-secrets' heuristics: templated (``{{x}}``, ``${X}``), sequential, UUID or non-alphanumeric
    values are not secrets; neither are placeholders mochi wrote itself."""
    return not (len(value) < 5 or value.lower() in _NOT_PASSWORDS or value.startswith("<")
                or heuristic.is_templated_secret(value)
                or heuristic.is_prefixed_with_dollar_sign(value) or heuristic.is_sequential_string(value)
                or heuristic.is_potential_uuid(value) or heuristic.is_not_alphanumeric_string(value))


def _non_overlapping(findings: list[Finding]) -> list[Finding]:
    """Overlapping findings merged into one span; a secret's type wins over personal data."""
    out: list[Finding] = []
    for f in sorted(findings, key=lambda f: (f.start, -f.end)):
        if out and f.start < out[-1].end:
            last = out[-1]
            kind = f.type if last.type in PERSONAL_TYPES and f.type not in PERSONAL_TYPES else last.type
            out[-1] = Finding(kind, last.start, max(last.end, f.end))
            continue
        out.append(f)
    return out
