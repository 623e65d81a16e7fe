"""A repository with secrets and personal data of every type planted in code, config, docs, commit
messages and diffs, each value freshly random, for the scrubbing test and benchmarks/secrets.py.

``plant(repo, rng)`` commits the planted files into an existing repository and returns what was
planted: (type, value, where) for every value, so a caller can look for each one in what mochi built.
"""

from __future__ import annotations

import base64
import json
import random
import string
from dataclasses import dataclass
from pathlib import Path

from mochi_pipeline_tests.repo_factory import commit

UPPER_DIGITS = string.ascii_uppercase + string.digits
ALNUM = string.ascii_letters + string.digits


@dataclass(frozen=True)
class Planted:
    type: str
    value: str
    where: str  # code, config, docs, commit_message, diff, secret_file


def _r(rng: random.Random, alphabet: str, n: int) -> str:
    return "".join(rng.choice(alphabet) for _ in range(n))


def _b64url(data: dict) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")


def values(rng: random.Random) -> dict[str, str]:
    """One fresh value of every secret and personal-data type."""
    name = rng.choice(["anna", "bruno", "chen", "dara", "emeka", "farah"]) + _r(rng, string.digits, 3)
    pem_body = "\n".join(_r(rng, ALNUM + "+/", 64) for _ in range(6))
    return {
        "aws_access_key": "AKIA" + _r(rng, UPPER_DIGITS, 16),
        "aws_secret_key": _r(rng, ALNUM + "/+", 40),
        "github_token": "ghp_" + _r(rng, ALNUM, 36),
        "github_fine_grained": "github_pat_" + _r(rng, ALNUM + "_", 82),
        "gitlab_token": "glpat-" + _r(rng, ALNUM + "-_", 20),
        "slack_token": f"xoxb-{_r(rng, string.digits, 11)}-{_r(rng, string.digits, 12)}-{_r(rng, ALNUM, 24)}",
        "slack_webhook": f"https://hooks.slack.com/services/T{_r(rng, UPPER_DIGITS, 8)}/B{_r(rng, UPPER_DIGITS, 8)}/"
                         + _r(rng, ALNUM, 24),
        "stripe_key": "sk_live_" + _r(rng, ALNUM, 24),
        "stripe_test_key": "sk_test_" + _r(rng, ALNUM, 24),
        "openai_key": "sk-proj-" + _r(rng, ALNUM + "_-", 48),
        "anthropic_key": "sk-ant-api03-" + _r(rng, ALNUM + "_-", 60),
        "gcp_api_key": "AIza" + _r(rng, ALNUM + "_-", 35),
        "azure_storage_key": _r(rng, ALNUM + "+/", 86) + "==",
        "sendgrid_key": f"SG.{_r(rng, ALNUM + '_-', 22)}.{_r(rng, ALNUM + '_-', 43)}",
        "pypi_token": "pypi-AgEIcHlwaS5vcmc" + _r(rng, ALNUM + "_-", 80),
        "jwt": ".".join([_b64url({"alg": "HS256", "typ": "JWT"}),
                         _b64url({"sub": _r(rng, string.digits, 10), "name": name}), _r(rng, ALNUM + "_-", 43)]),
        "private_key": f"-----BEGIN RSA PRIVATE KEY-----\n{pem_body}\n-----END RSA PRIVATE KEY-----",
        "db_password": _r(rng, ALNUM, 18),
        "config_token": _r(rng, "0123456789abcdef", 40),
        "email": f"{name}.{_r(rng, string.ascii_lowercase, 5)}@{_r(rng, string.ascii_lowercase, 7)}-corp.io",
        "ip_address": f"{rng.randint(11, 99)}.{rng.randint(1, 254)}.{rng.randint(1, 254)}.{rng.randint(1, 254)}",
        "phone": f"+44 20 {rng.randint(7000, 7999)} {rng.randint(1000, 9999)}",
    }


def plant(repo: Path, rng: random.Random, date: str = "2024-08-01T10:00:00+00:00", prefix: str = "") -> list[Planted]:
    """Commit planted files into ``repo`` (a git repository), under the folder ``prefix`` if given; returns every
    planted value and where it is."""
    v = values(rng)
    planted: list[Planted] = []

    def note(where: str, *types: str) -> None:
        planted.extend(Planted(t, v[t], where) for t in types)

    code = (
        '"""Settings of the billing service."""\n\nimport os\n\n'
        f'AWS_ACCESS_KEY_ID = "{v["aws_access_key"]}"\n'
        f'aws_secret_access_key = "{v["aws_secret_key"]}"\n'
        f'GITHUB_TOKEN = "{v["github_token"]}"\n'
        f'STRIPE_KEY = "{v["stripe_key"]}"\n'
        f'OPENAI_API_KEY = "{v["openai_key"]}"\n'
        f'DATABASE_URL = "postgres://billing:{v["db_password"]}@db.internal:5432/billing"\n'
        f'SUPPORT_CONTACT = "{v["email"]}"\n\n\n'
        "def client(session_token=None):\n"
        '    """A configured client (the JWT is for the staging tenant)."""\n'
        f'    token = session_token or "{v["jwt"]}"\n'
        '    return {"token": token, "region": os.environ.get("REGION", "eu")}\n'
    )
    note("code", "aws_access_key", "aws_secret_key", "github_token", "stripe_key", "openai_key", "db_password",
         "email", "jwt")
    js = (
        "export const config = {\n"
        f'  slackToken: "{v["slack_token"]}",\n'
        f'  webhook: "{v["slack_webhook"]}",\n'
        f'  mapsKey: "{v["gcp_api_key"]}",\n'
        f'  upstream: "{v["ip_address"]}",\n'
        "};\n\n"
        "export function notify(message) {\n"
        "  return fetch(config.webhook, { method: 'POST', body: JSON.stringify({ text: message }) });\n"
        "}\n"
    )
    note("code", "slack_token", "slack_webhook", "gcp_api_key", "ip_address")
    yaml = (
        "service:\n  name: billing\n  replicas: 3\n"
        f"  api_token: {v['config_token']}\n"
        f"  sendgrid: {v['sendgrid_key']}\n"
        f"  storage: DefaultEndpointsProtocol=https;AccountName=billing;AccountKey={v['azure_storage_key']}\n"
        f"  oncall: \"{v['phone']}\"\n"
    )
    note("config", "config_token", "sendgrid_key", "azure_storage_key", "phone")
    readme = (
        "# Billing\n\nThe billing service charges customers.\n\n## Setup\n\n"
        f"Ask {v['email']} for access, then publish with `twine upload -p {v['pypi_token']}`.\n\n"
        "```python\nimport anthropic\n\n"
        f"client = anthropic.Anthropic(api_key=\"{v['anthropic_key']}\")\n```\n"
    )
    note("docs", "email", "pypi_token", "anthropic_key")
    env = f"GITLAB_TOKEN={v['gitlab_token']}\nSTRIPE_TEST_KEY={v['stripe_test_key']}\n"
    note("secret_file", "gitlab_token", "stripe_test_key")

    commit(repo, "Add the billing service settings", date, {
        f"{prefix}billing/settings.py": code, f"{prefix}web/config.js": js, f"{prefix}deploy/billing.yaml": yaml,
        f"{prefix}docs/billing.md": readme, f"{prefix}.env": env, f"{prefix}deploy/id_rsa": v["private_key"] + "\n",
    })
    note("secret_file", "private_key")
    # A secret committed by mistake and removed at once: HEAD is clean, the diff and the message are not.
    leaked = (f'FINE_GRAINED = "{v["github_fine_grained"]}"\n'
              f'SIGNING_KEY = """{v["private_key"]}"""\n')
    commit(repo, "Add release signing helper", date, {f"{prefix}billing/release.py": leaked})
    note("diff", "github_fine_grained", "private_key")
    commit(repo, f"Remove signing key (was {v['gitlab_token']}); ask {v['email']} for the new one", date,
           {f"{prefix}billing/release.py": 'FINE_GRAINED = os.environ["FINE_GRAINED"]\n'})
    note("commit_message", "gitlab_token", "email")
    return planted
