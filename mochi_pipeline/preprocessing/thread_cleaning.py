"""Issue and pull request threads, and CI logs, as mochi learns from them (after BigCode's GitHub issues).

A thread goes through, in order:

1. bots out: threads opened by a bot are dropped, so are comments by one (the tracker's bot flag, or
   a login matching ``bot_logins``: ``*[bot]``, ``dependabot``, ``renovate``, ...);
2. trimmed: HTML comments (issue-template instructions), quoted replies that repeat earlier text of
   the thread, e-mail replies (``On ... wrote:`` with its quote, GitHub's e-mail footer, ``-----Original
   Message-----``), signatures (``Sent from my iPhone``, a ``-- `` line and what follows); in the opening
   post also template boilerplate (a line that recurs in the opening posts of ``template_min_threads``
   threads of the project) and the headings left without content (or with only ``_No response_``);
3. comments left empty, emoji-only or pure noise (``+1``, ``any update?``) dropped; the first
   ``max_comments`` kept, plus an accepted answer wherever it is;
4. too little or too much text left: the thread is dropped (``min_chars``, ``max_chars``);
5. scrubbed: title, body and every comment through the scrubber (secrets and personal data become
   placeholders), ``NAME=value`` secrets in pasted logs too, and user names in home directories
   (``/home/alice``) become ``<USER>``;
6. pseudonymised: every participant's login becomes ``user_<8 hex>``, in author fields, in
   ``@mentions`` and Jira's ``[~name]``, and as a bare word. The pseudonym is an HMAC of the login
   under a key derived from the tracker and project (and a secret, when one is given), so the same
   login gets the same pseudonym in every thread and every run, and hashing a known login without
   the key gives nothing to compare with.

Code blocks are left as they are by the trimming steps; in them only participants' logins are
pseudonymised. Every drop, trim and replacement is counted by reason or type.
"""

from __future__ import annotations

import bisect
import hashlib
import hmac
import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import lru_cache

from mochi_pipeline.preprocessing.scrubber import Scrubber
from mochi_pipeline.preprocessing.settings import ScrubSettings, ThreadCleaningSettings
from mochi_pipeline.records import CIFailure, IssueThread, ThreadComment

# Bump when cleaning changes what it keeps or writes (part of the assets' code versions).
THREAD_CLEANER_VERSION = "1"
PSEUDONYM_PREFIX = "user_"
USER_PLACEHOLDER = "<USER>"

_PSEUDONYM = re.compile(r"user_[0-9a-f]{8}")
_HTML_COMMENT = re.compile(r"<!--.*?(?:-->|\Z)", re.S)
_FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})")
_QUOTE = re.compile(r"^ {0,3}>")
_WROTE = re.compile(r"\b(?:wrote|schrieb|a écrit|escribió|ha scritto|написал)\s*:\s*$", re.I)
_ON = re.compile(r"^\s*(?:On|Am|Le|El|Il|\d{1,4}[./-]\d{1,2}[./-]\d{1,4})\b", re.I)
_EMAIL_FOOTER = re.compile(r"^\s*(?:You are receiving this because|Reply to this email directly|"
                           r"-{3,}\s*Original Message\s*-{3,}|_{10,}\s*$)", re.I)
_FOOTER_RULE = re.compile(r"^\s*(?:—|--|-)\s*$")
_SIGNATURE_DELIMITER = re.compile(r"^-- $")
_SENT_FROM = re.compile(r"^\s*(?:Sent from my \w[\w ]*|Sent from (?:Mail|Outlook|Yahoo Mail|Gmail) for \w[\w ]*|"
                        r"Get Outlook for \w[\w ]*|Sent via \w[\w ]*|Envoyé de mon \w[\w ]*|"
                        r"Von meinem \w[\w ]* gesendet)\.?\s*$", re.I)
_HEADING = re.compile(r"^ {0,3}(#{1,6})\s+\S")
_BOLD_HEADING = re.compile(r"^\s*\*\*[^*\n]+\*\*\s*:?\s*$")
_PLACEHOLDER_LINE = re.compile(r"^\s*(?:_?no response_?|n/?a|none|-|tbd|\.\.\.|…)\s*\.?\s*$", re.I)
_LIST_MARKER = re.compile(r"^\s*(?:[-*+]|\d+[.)])\s+(?:\[[ xX]\]\s*)?")
_TEMPLATE_MIN_LINE_CHARS = 20
# Markdown code: fenced blocks (to their closing fence, or the end) and inline spans.
_CODE = re.compile(r"^ {0,3}(`{3,}|~{3,}).*?(?:^ {0,3}\1[ \t]*$|\Z)|`[^`\n]+`", re.M | re.S)
# An @mention with GitHub's / GitLab's login grammar; not an e-mail, npm scope (@types/node) or dotted name.
_MENTION = re.compile(r"(?<![\w@./\\`+-])@([A-Za-z0-9](?:[A-Za-z0-9_]|[-.](?=[A-Za-z0-9_])){0,38})(?![\w/@-]|\.\w)")
_JIRA_MENTION = re.compile(r"\[~([^\]\s]+)\]")
_HOME_DIR = re.compile(r"(?<![\w.])((?:/home|/Users)/|[A-Za-z]:(?:\\\\|\\|/)Users(?:\\\\|\\|/))([A-Za-z0-9._-]+)")
# Secrets printed as NAME=value / NAME: value (env dumps, pasted logs): the scrubber wants quotes outside config files.
_LOG_SECRET = re.compile(
    r"(?i)\b[A-Z0-9_]*(?:TOKEN|SECRET|PASSWORD|PASSWD|API_?KEY|ACCESS_?KEY|PRIVATE_?KEY)[A-Z0-9_]*"
    r"[ \t]*[=:][ \t]*([^\s'\"$<*{%][^\s'\"]{7,})")
_AUTH_HEADER = re.compile(r"(?i)\bAuthorization:\s*(?:Bearer|Basic|token)\s+([A-Za-z0-9._~+/=-]{8,})")


@dataclass
class ThreadCleanStats:
    dropped: Counter = field(default_factory=Counter)  # reason -> threads
    dropped_comments: Counter = field(default_factory=Counter)  # reason -> comments
    trimmed: Counter = field(default_factory=Counter)  # what was cut (html_comment, quoted_reply, ...) -> times
    replaced: Counter = field(default_factory=Counter)  # secret or personal-data type -> replacements
    pseudonymised: Counter = field(default_factory=Counter)  # author, mention, bare -> replacements
    participants: int = 0  # distinct logins pseudonymised
    truncated: int = 0  # threads whose comments were cut to max_comments

    def metadata(self) -> dict[str, object]:
        """Plain values for asset metadata."""
        return {
            "dropped_threads": dict(sorted(self.dropped.items())),
            "dropped_comments": dict(sorted(self.dropped_comments.items())),
            "trimmed": dict(sorted(self.trimmed.items())),
            "replaced": dict(sorted(self.replaced.items())),
            "pseudonymised": dict(sorted(self.pseudonymised.items())),
            "participants": self.participants,
            "truncated_threads": self.truncated,
        }


@dataclass
class FailureCleanStats:
    dropped: Counter = field(default_factory=Counter)  # reason -> failures
    replaced: Counter = field(default_factory=Counter)  # type -> replacements
    changed: int = 0  # excerpts with at least one replacement

    def metadata(self) -> dict[str, object]:
        return {"dropped": dict(sorted(self.dropped.items())), "replaced": dict(sorted(self.replaced.items())),
                "changed": self.changed}


# --- bots and pseudonyms ---------------------------------------------------------------------


@lru_cache(maxsize=16)
def _bot_pattern(globs: tuple[str, ...]) -> re.Pattern[str] | None:
    if not globs:
        return None
    alternatives = "|".join(re.escape(g.casefold()).replace(r"\*", ".*") for g in globs)
    return re.compile(f"(?:{alternatives})")


def is_bot(login: str, settings: ThreadCleaningSettings, flagged: bool = False) -> bool:
    """Whether ``login`` is a bot: flagged by the tracker, or matching one of ``settings.bot_logins``."""
    pattern = _bot_pattern(tuple(settings.bot_logins))
    return flagged or bool(login and pattern is not None and pattern.fullmatch(login.casefold()))


def pseudonym_key(tracker: str, project: str, secret: str = "") -> bytes:
    """The HMAC key of a project's pseudonyms: from the tracker and project, and ``secret`` when given."""
    return hmac.new(secret.encode() or b"mochi-pseudonyms-v1", f"{tracker}\0{project}".encode(),
                    hashlib.sha256).digest()


def pseudonym(login: str, key: bytes) -> str:
    """``user_<8 hex>``: the same for a login (case-insensitive) under one key; '' stays ''."""
    if not login or _PSEUDONYM.fullmatch(login):
        return login
    return PSEUDONYM_PREFIX + hmac.new(key, login.casefold().encode(), hashlib.sha256).hexdigest()[:8]


class _Pseudonymiser:
    """Replaces one thread's logins: participants everywhere, any other @mention in prose."""

    def __init__(self, participants: Iterable[str], key: bytes, settings: ThreadCleaningSettings,
                 counts: Counter) -> None:
        self.key, self.settings, self.counts = key, settings, counts
        people = sorted({p for p in participants if p and not is_bot(p, settings) and not _PSEUDONYM.fullmatch(p)},
                        key=lambda p: (-len(p), p))
        names = "|".join(re.escape(p) for p in people)
        self.known = re.compile(rf"(?<![\w@./\\-])@({names})(?![\w-]|\.\w)", re.I) if people else None
        bare = [re.escape(p) for p in people if settings.bare_login_min_chars
                and len(p) >= settings.bare_login_min_chars]
        self.bare = re.compile(rf"(?<![\w-])({'|'.join(bare)})(?![\w-])", re.I) if bare else None

    def login(self, login: str) -> str:
        return pseudonym(login, self.key)

    def _mention(self, m: re.Match[str]) -> str:
        login = m.group(1)
        if is_bot(login, self.settings) or _PSEUDONYM.fullmatch(login):
            return m.group(0)
        self.counts["mention"] += 1
        return m.group(0).replace(login, self.login(login), 1)

    def _bare(self, m: re.Match[str]) -> str:
        self.counts["bare"] += 1
        return self.login(m.group(1))

    def text(self, text: str) -> str:
        out, last = [], 0
        for m in _CODE.finditer(text):
            out += [self._prose(text[last:m.start()]), self._code(m.group(0))]
            last = m.end()
        out.append(self._prose(text[last:]))
        return "".join(out)

    def _prose(self, text: str) -> str:
        if self.settings.pseudonymise_all_mentions:
            text = _MENTION.sub(self._mention, text)
            text = _JIRA_MENTION.sub(self._mention, text)
        return self._code(text)

    def _code(self, text: str) -> str:
        if self.known is not None:
            text = self.known.sub(self._mention, text)
        if self.bare is not None:
            text = self.bare.sub(self._bare, text)
        return text


# --- trimming --------------------------------------------------------------------------------


def _code_flags(lines: list[str]) -> list[bool]:
    """Per line: inside a fenced code block (fences included)."""
    flags, fence = [], ""
    for line in lines:
        m = _FENCE.match(line)
        if fence:
            flags.append(True)
            if m and m.group(1)[0] == fence[0] and len(m.group(1)) >= len(fence) and not line[m.end():].strip():
                fence = ""
        elif m:
            flags.append(True)
            fence = m.group(1)
        else:
            flags.append(False)
    return flags


def _words(text: str) -> str:
    """Text reduced to its words (what a rendered quote keeps of the markdown it copies)."""
    return " ".join(re.findall(r"\w+", text.casefold()))


def _unquote(line: str) -> str:
    return re.sub(r"^(?:\s*>)+", "", line)


def _repeats(block: list[str], earlier: list[str]) -> bool:
    """Whether a quote block repeats earlier text: most (80%) of its lines occur in it."""
    parts = [w for w in (_words(_unquote(line)) for line in block) if w]
    found = sum(any(f" {p} " in e for e in earlier) for p in parts)
    return found >= 0.8 * len(parts)


def _wrote_header(lines: list[str], i: int) -> int:
    """Lines (1 or 2) of an e-mail reply header ("On Mon, Jan 1, 2024, Alice <a@b.c> wrote:") at ``i``, else 0."""
    if not _ON.match(lines[i]):
        return 0
    if _WROTE.search(lines[i]) and len(lines[i]) < 400:
        return 1
    if i + 1 < len(lines) and _WROTE.search(lines[i + 1]) and len(lines[i]) + len(lines[i + 1]) < 400:
        return 2
    return 0


def _tidy(lines: list[str]) -> str:
    """Runs of blank lines outside code collapsed to one; leading and trailing blank lines removed."""
    flags = _code_flags(lines)
    out: list[str] = []
    for line, code in zip(lines, flags, strict=True):
        if not code and not line.strip():
            if out and out[-1].strip():
                out.append("")
            continue
        out.append(line.rstrip() if not code else line)
    return "\n".join(out).strip("\n")


def strip_html_comments(text: str, trimmed: Counter) -> str:
    """``text`` without HTML comments (``<!-- ... -->``, an unclosed one to the end), except in code blocks."""
    if "<!--" not in text:
        return text
    lines = text.split("\n")
    flags = _code_flags(lines)
    starts = [0]
    for line in lines[:-1]:
        starts.append(starts[-1] + len(line) + 1)

    def drop(m: re.Match[str]) -> str:
        if flags[bisect.bisect_right(starts, m.start()) - 1]:
            return m.group(0)
        trimmed["html_comment"] += 1
        return ""

    return _HTML_COMMENT.sub(drop, text)


def trim_text(text: str, earlier: list[str], trimmed: Counter) -> str:
    """``text`` without HTML comments, quoted replies repeating ``earlier`` (texts reduced by ``_words`` and
    padded with spaces), e-mail reply quotes and footers, and signatures; what was cut is counted."""
    text = strip_html_comments(text.replace("\r\n", "\n").replace("\r", "\n"), trimmed)
    lines = text.split("\n")
    code = _code_flags(lines)
    out: list[str] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        if code[i]:
            out.append(line)
            i += 1
            continue
        if _EMAIL_FOOTER.match(line):  # the rest is the quoted e-mail or the tracker's footer
            while out and (not out[-1].strip() or _FOOTER_RULE.match(out[-1])):
                out.pop()
            trimmed["email_reply"] += 1
            break
        if _SIGNATURE_DELIMITER.match(line):
            trimmed["signature"] += 1
            break
        if _SENT_FROM.match(line):
            trimmed["signature"] += 1
            i += 1
            continue
        header = _wrote_header(lines, i)
        if header:
            j = i + header
            while j < len(lines) and not lines[j].strip():
                j += 1
            if j < len(lines) and _QUOTE.match(lines[j]) and not code[j]:
                while j < len(lines) and _QUOTE.match(lines[j]) and not code[j]:
                    j += 1
                trimmed["email_reply"] += 1
                i = j
                continue
        if _QUOTE.match(line):
            j = i
            while j < len(lines) and _QUOTE.match(lines[j]) and not code[j]:
                j += 1
            if _repeats(lines[i:j], earlier):
                trimmed["quoted_reply"] += 1
            else:
                out += lines[i:j]
            i = j
            continue
        out.append(line)
        i += 1
    return _tidy(out)


def _template_key(line: str) -> str:
    """A body line as compared across threads: list marker and checkbox state ignored, case and spaces folded."""
    return " ".join(_LIST_MARKER.sub("", line).casefold().split())


def _heading_level(line: str) -> int:
    m = _HEADING.match(line)
    if m:
        return len(m.group(1))
    return 7 if _BOLD_HEADING.match(line) else 0


def template_lines(threads: list[IssueThread], settings: ThreadCleaningSettings) -> dict[tuple[str, str], set[str]]:
    """Per (tracker, project): the opening-post lines that recur in at least ``template_min_threads`` threads."""
    if not settings.template_min_threads:
        return {}
    seen: dict[tuple[str, str], Counter] = {}
    for t in threads:
        if is_bot(t.author, settings, t.author_is_bot):
            continue
        lines = strip_html_comments(t.body.replace("\r\n", "\n"), Counter()).split("\n")
        keys = {_template_key(line) for line, code in zip(lines, _code_flags(lines), strict=True)
                if not code and not _heading_level(line)}
        seen.setdefault((t.tracker, t.project), Counter()).update(k for k in keys
                                                                 if len(k) >= _TEMPLATE_MIN_LINE_CHARS)
    return {p: {k for k, n in c.items() if n >= settings.template_min_threads} for p, c in seen.items()}


def strip_template(text: str, template: set[str], trimmed: Counter) -> str:
    """An opening post without template boilerplate lines, then without the sections left empty."""
    lines = text.split("\n")
    if template:
        flags = _code_flags(lines)
        kept = [line for line, code in zip(lines, flags, strict=True)
                if code or _heading_level(line) or _template_key(line) not in template]
        trimmed["template_line"] += len(lines) - len(kept)
        lines = kept
    removed = True
    while removed:
        removed = False
        flags = _code_flags(lines)
        levels = [0 if code else _heading_level(line) for line, code in zip(lines, flags, strict=True)]
        for i, level in enumerate(levels):
            if not level:
                continue
            j = i + 1
            while j < len(lines) and not (levels[j] and levels[j] <= level):
                j += 1
            if all(not lines[k].strip() or (not flags[k] and _PLACEHOLDER_LINE.match(lines[k]))
                   for k in range(i + 1, j)):
                del lines[i:j]
                trimmed["empty_section"] += 1
                removed = True
                break
    return _tidy(lines)


def _noise(text: str, settings: ThreadCleaningSettings) -> bool:
    words = _words(text.replace("+1", "plus1").replace("-1", "minus1"))
    noise = {_words(n.replace("+1", "plus1").replace("-1", "minus1")) for n in settings.noise_comments}
    return not words or words in noise


# --- scrubbing -------------------------------------------------------------------------------


def _scrub(text: str, scrubber: Scrubber, settings: ThreadCleaningSettings, counts: Counter) -> str:
    """Scrubber findings, NAME=value secrets and home-directory user names replaced; counted by type."""
    if not text:
        return text
    result = scrubber.scrub(text)
    counts.update(result.counts)
    text = result.text
    for pattern in (_LOG_SECRET, _AUTH_HEADER):
        text = _replace_group(pattern, text, "<SECRET:token>", counts, "token",
                              lambda v: any(c.isdigit() for c in v) and not v.startswith("<SECRET"))
    impersonal = {n.casefold() for n in settings.impersonal_home_dirs}

    def home(m: re.Match[str]) -> str:
        if m.group(2).casefold() in impersonal:
            return m.group(0)
        counts["user_name"] += 1
        return m.group(1) + USER_PLACEHOLDER

    return _HOME_DIR.sub(home, text)


def _replace_group(pattern: re.Pattern[str], text: str, placeholder: str, counts: Counter, kind: str,
                   keep_if) -> str:
    parts, last = [], 0
    for m in pattern.finditer(text):
        if not keep_if(m.group(1)):
            continue
        parts += [text[last:m.start(1)], placeholder]
        last = m.end(1)
        counts[kind] += 1
    return "".join(parts) + text[last:] if parts else text


# --- threads ---------------------------------------------------------------------------------


def _thread_chars(title: str, body: str, comments: list[ThreadComment]) -> int:
    return len(title) + len(body) + sum(len(c.body) for c in comments)


def clean_issue_threads(threads: list[IssueThread], settings: ThreadCleaningSettings, scrub: ScrubSettings,
                        secret: str = "") -> tuple[list[IssueThread], ThreadCleanStats]:
    """The threads worth learning from: bots out, trimmed, filtered by length, scrubbed, pseudonymised.

    ``secret`` (the value of ``settings.pseudonym_key_env``, read by the caller) is mixed into the pseudonym key.
    """
    stats = ThreadCleanStats()
    scrubber = Scrubber(scrub)
    templates = template_lines(threads, settings)
    logins: set[tuple[bytes, str]] = set()
    out = []
    for thread in threads:
        if is_bot(thread.author, settings, thread.author_is_bot):
            stats.dropped["bot_author"] += 1
            continue
        earlier = [f" {_words(thread.title)} "]
        body = trim_text(thread.body, earlier, stats.trimmed)
        body = strip_template(body, templates.get((thread.tracker, thread.project), set()), stats.trimmed)
        earlier.append(f" {_words(thread.body)} ")
        comments: list[ThreadComment] = []
        for c in sorted(thread.comments, key=lambda c: c.created_at):
            text = trim_text(c.body, earlier, stats.trimmed)
            earlier.append(f" {_words(c.body)} ")
            if is_bot(c.author, settings, c.author_is_bot):
                stats.dropped_comments["bot"] += 1
            elif not text.strip():
                stats.dropped_comments["empty"] += 1
            elif not c.accepted and _noise(text, settings):
                stats.dropped_comments["noise"] += 1
            else:
                comments.append(c.model_copy(update={"body": text}))
        if len(comments) > settings.max_comments:
            kept = comments[:settings.max_comments] + [c for c in comments[settings.max_comments:] if c.accepted]
            stats.dropped_comments["over_max_comments"] += len(comments) - len(kept)
            stats.truncated += 1
            comments = kept
        size = _thread_chars(thread.title, body, comments)
        if size < settings.min_chars:
            stats.dropped["too_short"] += 1
            continue
        if size > settings.max_chars:
            stats.dropped["too_long"] += 1
            continue
        key = pseudonym_key(thread.tracker, thread.project, secret)
        participants = {thread.author, *(c.author for c in thread.comments if not is_bot(c.author, settings,
                                                                                          c.author_is_bot))}
        names = _Pseudonymiser(participants, key, settings, stats.pseudonymised)

        def clean(text: str, names: _Pseudonymiser = names) -> str:
            return names.text(_scrub(text, scrubber, settings, stats.replaced))

        comments = [c.model_copy(update={"body": clean(c.body), "author": names.login(c.author)}) for c in comments]
        stats.pseudonymised["author"] += 1 + len(comments)
        logins.update((key, p.casefold()) for p in participants if p)
        out.append(thread.model_copy(update={
            "title": clean(thread.title), "body": clean(body), "author": names.login(thread.author),
            "comments": comments,
        }))
    stats.participants = len(logins)
    return out, stats


# --- CI failures -----------------------------------------------------------------------------


def clean_ci_failures(failures: list[CIFailure], scrub: ScrubSettings,
                      settings: ThreadCleaningSettings | None = None) -> tuple[list[CIFailure], FailureCleanStats]:
    """Failures with scrubbed excerpts (tokens, addresses, user names in paths); empty excerpts dropped."""
    settings = settings or ThreadCleaningSettings()
    stats = FailureCleanStats()
    scrubber = Scrubber(scrub)
    out = []
    for failure in failures:
        if not failure.excerpt.strip():
            stats.dropped["empty_excerpt"] += 1
            continue
        counts: Counter = Counter()
        excerpt = _scrub(failure.excerpt, scrubber, settings, counts)
        if counts:
            stats.changed += 1
            stats.replaced.update(counts)
            failure = failure.model_copy(update={"excerpt": excerpt})
        out.append(failure)
    return out, stats
