"""Settings of the preprocessing layer (``chunking`` and ``dedup`` sections of mochi.yaml)."""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Any, ClassVar
from urllib.parse import urlsplit

from pydantic import Field, field_validator, model_validator

from mochi_pipeline.settings_base import Section


class ChunkStrategy(StrEnum):
    FUNCTION = "function"
    CLASS = "class"
    FILE = "file"
    SLIDING_WINDOW = "sliding_window"


class ChunkingSettings(Section):
    """How source files are cut into chunks (``strategy`` to ``exclude_languages``), and how that work is split
    into partitions (the rest: they never change a chunk, so they are left out of ``signature()``)."""

    strategy: ChunkStrategy = Field(ChunkStrategy.FUNCTION, description="function, class, file or sliding_window.")
    max_tokens: int = Field(512, ge=16, description="Token budget of one chunk.")
    min_tokens: int = Field(24, ge=0, description="Sibling definitions smaller than this are merged.")
    window_tokens: int = Field(256, ge=16, description="Window size for the sliding_window strategy and fallback.")
    overlap_tokens: int = Field(32, ge=0, description="Overlap between consecutive windows.")
    exclude_languages: list[str] = Field(
        default_factory=lambda: ["text", "json"],
        description="Languages never cut into code chunks (documentation formats never are; they become doc sections).",
    )
    partition_depth: int = Field(
        2, ge=0, description="Directory levels that name a partition of code_chunks (2: src/app, tests; 0: one "
        "partition for the whole repository). Each partition is chunked and stored on its own.",
    )
    partitions_per_run: int = Field(
        16, ge=1, description="At most this many partitions of code_chunks in one run of a backfill launched from "
        "the UI or by the sensors: a first run of a large repository spreads over several runs (and workers).",
    )

    RESULT_FIELDS: ClassVar[tuple[str, ...]] = ("strategy", "max_tokens", "min_tokens", "window_tokens",
                                                "overlap_tokens", "exclude_languages")

    def signature(self, *fields: str) -> str:
        """Hash of the fields that decide the chunks (or of ``fields``): not of how the work is partitioned."""
        return super().signature(*(fields or self.RESULT_FIELDS))

    @model_validator(mode="after")
    def _check(self) -> ChunkingSettings:
        if self.overlap_tokens >= self.window_tokens:
            raise ValueError("overlap_tokens must be smaller than window_tokens")
        if self.min_tokens >= self.max_tokens:
            raise ValueError("min_tokens must be smaller than max_tokens")
        return self


class LSHStorage(StrEnum):
    MEMORY = "memory"
    REDIS = "redis"


REDIS_URL_SCHEMES = ("redis", "rediss", "unix")
REDIS_PREFIX = re.compile(r"[A-Za-z0-9:._-]+")


class DedupSettings(Section):
    """How chunks are deduplicated (``ngram`` to ``seed``), and where the LSH index lives (the rest).

    Where the index lives never changes which chunks are kept (tested), so the ``lsh_storage`` and
    ``redis_*`` fields are left out of ``signature()``: moving the index does not make
    ``deduplicated_chunks`` stale.
    """

    ngram: int = Field(5, ge=1, description="Word n-gram size of the MinHash shingles (The Stack: 5).")
    num_perm: int = Field(256, ge=16, description="MinHash permutations (The Stack: 256).")
    threshold: float = Field(
        0.7, gt=0.0, le=1.0, description="Jaccard similarity above which two chunks are near duplicates."
    )
    seed: int = Field(1, description="MinHash seed.")
    lsh_storage: LSHStorage = Field(
        LSHStorage.MEMORY, description="Where the LSH index lives: memory (built anew in each run) or redis "
        "(datasketch's Redis storage at redis_url: kept between runs, so a run only adds the texts it has not "
        "indexed before, and shared by every project using that Redis). The same chunks are kept either way.",
    )
    redis_url: str = Field("redis://localhost:6379/0", description="The Redis of lsh_storage: redis "
                           "(redis://, rediss:// or unix://; without a password: see redis_password_env).")
    redis_password_env: str = Field("MOCHI_REDIS_PASSWORD", description="Environment variable holding the Redis "
                                    "password (unset = none). Read when deduplication runs, never logged or stored.")
    redis_prefix: str = Field("mochi:dedup", description="Prefix of the index's Redis keys: one index per ngram, "
                              "num_perm, seed and LSH bands (from threshold) under it.")
    redis_prune_days: float = Field(30, ge=0, description="Entries of texts no run has deduplicated for this many "
                                    "days are removed from the index, and so are the indexes of other dedup "
                                    "settings unused as long (0 = keep everything).")
    redis_timeout_s: float = Field(10.0, gt=0, description="Seconds to connect to Redis and to wait for one "
                                   "reply (each command is retried 3 times, with backoff).")

    RESULT_FIELDS: ClassVar[tuple[str, ...]] = ("ngram", "num_perm", "threshold", "seed")

    def signature(self, *fields: str) -> str:
        """Hash of the fields that decide the result (or of ``fields``): not of where the index lives."""
        return super().signature(*(fields or self.RESULT_FIELDS))

    @model_validator(mode="before")
    @classmethod
    def _check_url(cls, data: Any) -> Any:
        # On the whole section, not the field: an error then shows the section as {...}, never the URL,
        # which may hold a password.
        value = data.get("redis_url") if isinstance(data, dict) else None
        if isinstance(value, str):
            try:
                url = urlsplit(value)
                password = url.password
            except ValueError:
                url, password = None, None
            if url is None or url.scheme not in REDIS_URL_SCHEMES or "://" not in value:
                raise ValueError("redis_url is not a Redis URL: use redis://HOST:PORT/DB, rediss://HOST:PORT/DB "
                                 "or unix:///PATH")
            if password is not None:
                raise ValueError("redis_url holds a password, which does not belong in mochi.yaml: remove it "
                                 "from the URL and put it in the environment variable named by "
                                 "dedup.redis_password_env")
        return data

    @field_validator("redis_prefix")
    @classmethod
    def _check_prefix(cls, value: str) -> str:
        if not REDIS_PREFIX.fullmatch(value):
            raise ValueError("use letters, digits and : . _ - only")
        return value

    @model_validator(mode="after")
    def _check_bands(self) -> DedupSettings:
        if self.lsh_storage == LSHStorage.REDIS:
            from mochi_pipeline.preprocessing.minhash import lsh_bands

            bands, _ = lsh_bands(self.threshold, self.num_perm)
            if bands < 2:
                raise ValueError(f"lsh_storage redis needs at least 2 LSH bands (datasketch's MinHashLSH), but "
                                 f"threshold {self.threshold} with num_perm {self.num_perm} gives {bands}: lower "
                                 "threshold, raise num_perm or use lsh_storage: memory")
        return self


class ScrubSettings(Section):
    """What never reaches a dataset: secrets, and personal data (see preprocessing/scrubber.py)."""

    secrets: bool = Field(True, description="Replace secrets (keys, tokens, passwords, private keys) by "
                          "<SECRET:type> placeholders.")
    personal_data: bool = Field(True, description="Replace e-mail addresses, public IP addresses and phone "
                                "numbers by <EMAIL>, <IP_ADDRESS>, <PHONE>.")
    secret_files: list[str] = Field(
        default_factory=lambda: [
            "**/.env", "**/.env.*", "**/*.env", "**/*.pem", "**/*.key", "**/*.p12", "**/*.pfx", "**/*.keystore",
            "**/id_rsa", "**/id_dsa", "**/id_ecdsa", "**/id_ed25519", "**/.npmrc", "**/.pypirc", "**/.netrc",
            "**/.git-credentials", "**/credentials", "**/credentials.json", "**/secrets.yaml", "**/secrets.yml",
        ],
        description="Files that are nothing but secrets: dropped whole (counted as secret_file). Credential JSON "
        "(service accounts) is recognised by its content too.",
    )
    high_entropy_in: list[str] = Field(
        default_factory=lambda: ["**/*.yaml", "**/*.yml", "**/*.json", "**/*.toml", "**/*.ini", "**/*.cfg",
                                 "**/*.conf", "**/*.properties", "**/*.tf", "**/Dockerfile", "**/*.xml"],
        description="Config files in which any quoted high-entropy string counts as a secret (in code it takes a "
        "secret-sounding name).",
    )
    base64_entropy_limit: float = Field(4.5, gt=0, le=8, description="Shannon entropy above which a base64 string "
                                        "in a config file is a secret (detect-secrets' default).")
    hex_entropy_limit: float = Field(3.0, gt=0, le=8, description="The same for hex strings.")
    allow: list[str] = Field(default_factory=list, description="Exact values never replaced (a public support "
                             "address, a documented test key).")
    max_line_chars: int = Field(2000, ge=80, description="Longer lines (minified data) skip the keyword and entropy "
                                "rules; the token patterns still apply.")


class FilterSettings(Section):
    """Files that are not the project's own code or docs, dropped with a counted reason before anything is cut."""

    vendored_dirs: list[str] = Field(
        default_factory=lambda: ["vendor", "vendored", "third_party", "third-party", "thirdparty", "node_modules",
                                 "bower_components", "site-packages", "external", "extern", "_vendor"],
        description="Directory names whose files are someone else's code (any depth).",
    )
    generated: list[str] = Field(
        default_factory=lambda: ["**/*_pb2.py", "**/*_pb2_grpc.py", "**/*.pb.go", "**/*.pb.cc", "**/*.pb.h",
                                 "**/*.min.js", "**/*.min.css", "**/*.lock", "**/package-lock.json",
                                 "**/yarn.lock", "**/pnpm-lock.yaml", "**/go.sum", "**/*.map"],
        description="Globs of generated files (also recognised by a 'DO NOT EDIT' / '@generated' header, and by "
        "minified line lengths).",
    )
    minified_mean_line: int = Field(300, ge=40, description="Mean line length (characters) above which a file is "
                                    "taken as minified.")
    licenses_allow: list[str] = Field(default_factory=list, description="SPDX ids a file's license must be one of "
                                      "([] = any). A file without an SPDX header has the repository's license.")
    licenses_deny: list[str] = Field(default_factory=list, description="SPDX ids whose files are dropped, "
                                     "e.g. [AGPL-3.0-only, GPL-3.0-only].")


class ThreadCleaningSettings(Section):
    """How issue / pull request threads and CI logs are cleaned (see preprocessing/thread_cleaning.py)."""

    min_chars: int = Field(100, ge=0, description="Threads with less text than this after cleaning (title, body "
                           "and comments) are dropped (too_short).")
    max_chars: int = Field(60_000, ge=1, description="Threads with more text than this after cleaning are dropped "
                           "(too_long): release trackers and pasted logs, not a discussion.")
    max_comments: int = Field(50, ge=0, description="Comments kept per thread: the first ones (the problem and its "
                              "discussion; later ones are mostly follow-ups), plus an accepted answer wherever it is.")
    bot_logins: list[str] = Field(
        default_factory=lambda: ["*[bot]", "*-bot", "*_bot", "dependabot*", "renovate*", "codecov*",
                                 "github-actions", "coveralls", "greenkeeper*", "mergify*", "pre-commit-ci*",
                                 "allcontributors*", "sonarcloud*", "netlify*", "vercel*", "gitlab-bot", "jenkins*"],
        description="Logins of bots, case-insensitive, '*' the only wildcard: their comments are dropped, threads "
        "they opened too (as is anything the tracker marks as a bot).",
    )
    noise_comments: list[str] = Field(
        default_factory=lambda: ["+1", "-1", "me too", "same here", "same issue", "same problem", "any update",
                                 "any updates", "bump", "thanks", "thank you", "ping"],
        description="Comments that are only this (case-insensitive, punctuation ignored) carry nothing and are "
        "dropped; so are comments without a word (emoji only).",
    )
    template_min_threads: int = Field(5, ge=0, description="A line of a thread's opening post that recurs in the "
                                      "opening posts of at least this many threads of the project is issue-template "
                                      "boilerplate and removed (0 = off).")
    bare_login_min_chars: int = Field(4, ge=0, description="Participants' logins at least this long are also "
                                      "pseudonymised where they appear as a bare word (paths, 'thanks alice'), not "
                                      "only as @mentions (0 = only @mentions).")
    pseudonymise_all_mentions: bool = Field(True, description="Pseudonymise every @mention in prose, not only those "
                                            "of the thread's participants (code spans: participants only).")
    impersonal_home_dirs: list[str] = Field(
        default_factory=lambda: ["runner", "runneradmin", "root", "ubuntu", "user", "admin", "circleci", "travis",
                                 "vsts", "jenkins", "gitlab-runner", "docker", "build", "builder", "vagrant",
                                 "ec2-user", "appveyor", "buildkite-agent", "public", "shared", "default"],
        description="Home directory names that identify nobody (CI runners, containers): kept. Any other name in "
        "/home/NAME, /Users/NAME or C:\\Users\\NAME becomes <USER>.",
    )
    pseudonym_key_env: str = Field(
        "MOCHI_PSEUDONYM_KEY", description="Environment variable holding a secret mixed into the pseudonym key. "
        "Unset, the key derives from the project name alone: pseudonyms stay stable, but someone who knows the "
        "project and a login can confirm that login's pseudonym.",
    )
