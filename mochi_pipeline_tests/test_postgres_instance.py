"""The Postgres block of dagster.yaml, uncommented as its comment says, against a real PostgreSQL server: a
multiprocess run of the data assets is kept there, and another process reads the run and its materializations back."""

from __future__ import annotations

import glob
import json
import os
import pwd
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import psycopg2
import pytest
import yaml

from mochi_pipeline.cli import REPO_ROOT
from mochi_pipeline.config import load_config
from mochi_pipeline.dagster_internals import partition_range_tags
from mochi_pipeline.definitions import defs
from mochi_pipeline_tests.loopback import PortTaken, on_a_free_port, port_taken
from mochi_pipeline_tests.materialize import DATA_ASSETS, code_partitions

pytestmark = pytest.mark.slow

SERVER_BINARIES = ("initdb", "pg_ctl", "postgres", "createdb")


@dataclass(frozen=True)
class Postgres:
    port: int
    password: str
    user: str = "mochi"
    db: str = "mochi"
    host: str = "127.0.0.1"

    def env(self) -> dict[str, str]:
        """The variables dagster.yaml's Postgres block reads."""
        return {"MOCHI_PG_HOST": self.host, "MOCHI_PG_PORT": str(self.port), "MOCHI_PG_DB": self.db,
                "MOCHI_PG_USER": self.user, "MOCHI_PG_PASSWORD": self.password}


def postgres_bindir() -> Path | None:
    found = subprocess.run(["pg_config", "--bindir"], capture_output=True, text=True) if shutil.which("pg_config") \
        else None
    candidates = [found.stdout.strip()] if found and found.returncode == 0 else []
    candidates += sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True)
    return next((Path(d) for d in candidates if all((Path(d) / b).is_file() for b in SERVER_BINARIES)), None)


def run(cmd: list, **kwargs) -> None:
    done = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, **kwargs)
    assert done.returncode == 0, f"{' '.join(map(str, cmd))} failed:\n{done.stdout}\n{done.stderr}"


@pytest.fixture(scope="module")
def postgres(tmp_path_factory) -> Iterator[Postgres]:
    """A PostgreSQL server of its own on loopback, with a random password, stopped afterwards."""
    bindir = postgres_bindir()
    if bindir is None:
        pytest.fail(f"no PostgreSQL server binaries ({', '.join(SERVER_BINARIES)}) in `pg_config --bindir` or "
                    "/usr/lib/postgresql/*/bin: run `make system-deps` (apt-get install postgresql)")
    owner: dict = {}
    if os.geteuid() == 0:
        # The server refuses to run as root: run it as an unprivileged account, in a directory that account can
        # enter (pytest's temporary root is private to root).
        account = pwd.getpwnam("postgres" if any(p.pw_name == "postgres" for p in pwd.getpwall()) else "nobody")
        root = Path(tempfile.mkdtemp(prefix="mochi-pg-"))
        os.chown(root, account.pw_uid, account.pw_gid)
        owner = {"user": account.pw_uid, "group": account.pw_gid, "extra_groups": []}
    else:
        root = tmp_path_factory.mktemp("postgres")
    password = secrets.token_urlsafe(24)
    pwfile = root / "password"
    pwfile.write_text(password)
    pwfile.chmod(0o600)
    if owner:
        os.chown(pwfile, owner["user"], owner["group"])
    data = root / "data"
    try:
        run([bindir / "initdb", "-D", data, "-U", Postgres.user, f"--pwfile={pwfile}", "--auth=scram-sha-256",
             "--encoding=UTF8", "--locale=C", "--no-sync"], **owner)

        def start(port: int) -> Postgres:
            log = root / f"server-{port}.log"
            done = subprocess.run([str(c) for c in (bindir / "pg_ctl", "-D", data, "-l", log, "-w", "-t", "60", "-o",
                                                    f"-h {Postgres.host} -p {port} -k {root}", "start")],
                                  capture_output=True, text=True, **owner)
            if done.returncode != 0:
                text = f"{done.stdout}\n{done.stderr}\n{log.read_text() if log.exists() else ''}"
                raise (PortTaken if port_taken(text) else AssertionError)(f"pg_ctl start failed:\n{text}")
            return Postgres(port=port, password=password)

        server = on_a_free_port(start)
        run([bindir / "createdb", "-h", server.host, "-p", server.port, "-U", server.user, server.db],
            env={**os.environ, "PGPASSWORD": server.password})
        yield server
    finally:
        if (data / "postmaster.pid").exists():
            run([bindir / "pg_ctl", "-D", data, "-m", "fast", "-w", "stop"], **owner)
        if owner:
            shutil.rmtree(root, ignore_errors=True)


def dagster_yaml_with_postgres() -> str:
    """The project's dagster.yaml with its commented Postgres block uncommented, as its comment tells a user to."""
    text = (REPO_ROOT / "dagster.yaml").read_text()
    block = re.search(r"^# storage:\n(?:#   .*\n)+", text, re.M)
    assert block, "dagster.yaml lost its commented `storage: postgres:` block"
    uncommented = "".join(line[2:] for line in block.group(0).splitlines(keepends=True))
    return text[:block.start()] + uncommented + text[block.end():]


def data_refresh_job() -> dg.JobDefinition:
    """The code location's data job (ingestion → training_dataset) as workspace.yaml loads it (mochi.yaml from
    $MOCHI_CONFIG), rebuilt in each step's process as in a run launched from the UI or by a sensor."""
    return defs().resolve_job_def("data_refresh_job")


READ_BACK = """
import json, sys
import dagster as dg

run_id, names = sys.argv[1], json.loads(sys.argv[2])
with dg.DagsterInstance.get() as instance:
    latest = {n: instance.get_latest_materialization_event(dg.AssetKey(n)) for n in names}
    print(json.dumps({
        "storage": sorted(type(s).__name__ for s in (instance.run_storage, instance.event_log_storage,
                                                     instance.schedule_storage)),
        "runs": {r.run_id: r.status.value for r in instance.get_runs()},
        "latest": {n: e.run_id if e else None for n, e in latest.items()},
        "step_pids": sorted({e.dagster_event.pid for e in
                             instance.all_logs(run_id, of_type=dg.DagsterEventType.STEP_START)}),
    }))
"""


def test_a_multiprocess_run_is_kept_in_postgres_and_read_back_by_another_process(postgres, sample_repo, tmp_path,
                                                                                 monkeypatch):
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text(dagster_yaml_with_postgres())
    assert "postgres" in yaml.safe_load((home / "dagster.yaml").read_text())["storage"]
    config = tmp_path / "mochi.yaml"
    config.write_text(yaml.safe_dump({"repo": {"source": str(sample_repo)}, "artifacts_root": str(tmp_path / "art")}))
    for name, value in {"DAGSTER_HOME": str(home), "MOCHI_CONFIG": str(config), **postgres.env()}.items():
        monkeypatch.setenv(name, value)

    with dg.DagsterInstance.get() as instance:
        partitions = code_partitions(load_config(), instance)  # as the commit sensor registers them
        result = dg.execute_job(dg.reconstructable(data_refresh_job), instance, tags=partition_range_tags(partitions))
        assert result.success, [e.message for e in result.all_events if e.is_failure]

    read = subprocess.run([sys.executable, "-c", READ_BACK, result.run_id, json.dumps(DATA_ASSETS)],
                          capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert read.returncode == 0, read.stderr
    seen = json.loads(read.stdout.strip().splitlines()[-1])
    assert seen["storage"] == ["PostgresEventLogStorage", "PostgresRunStorage", "PostgresScheduleStorage"]
    assert seen["runs"] == {result.run_id: "SUCCESS"}
    assert seen["latest"] == {n: result.run_id for n in DATA_ASSETS}
    assert len(seen["step_pids"]) > 1 and os.getpid() not in seen["step_pids"]  # steps ran in their own processes

    assert not list(home.rglob("*.db")), "SQLite files under DAGSTER_HOME: the instance did not use Postgres"
    with psycopg2.connect(host=postgres.host, port=postgres.port, user=postgres.user, password=postgres.password,
                          dbname=postgres.db) as conn, conn.cursor() as cur:
        cur.execute("SELECT run_id FROM runs")
        assert [row[0] for row in cur.fetchall()] == [result.run_id]
