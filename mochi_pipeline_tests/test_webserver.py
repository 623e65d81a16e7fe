"""The Dagster web UI serves this code location: the whole asset graph, jobs and sensors."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from mochi_pipeline_tests.loopback import PortTaken, on_a_free_port, port_taken

pytestmark = pytest.mark.slow  # starts dagster-webserver

ROOT = Path(__file__).resolve().parent.parent
QUERY = """
{ assetNodes { assetKey { path } groupName dependencyKeys { path } }
  repositoriesOrError { ... on RepositoryConnection { nodes { jobs { name } schedules { name } sensors { name } } } } }
"""


def _graph_from_webserver(port: int, repo: Path, dagster_home: Path) -> dict:
    """Start dagster-webserver on ``port`` in ``repo``, read the asset graph through GraphQL, stop it."""
    env = {**{k: v for k, v in os.environ.items() if k != "MOCHI_CONFIG"}, "DAGSTER_HOME": str(dagster_home)}
    webserver = Path(sys.executable).parent / "dagster-webserver"
    proc = subprocess.Popen([str(webserver), "-w", str(ROOT / "workspace.yaml"), "-h", "127.0.0.1", "-p", str(port)],
                            cwd=repo, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                reply = httpx.post(f"http://127.0.0.1:{port}/graphql", json={"query": QUERY}, timeout=10)
                data = reply.json()["data"]
                if data["assetNodes"] and proc.poll() is None:  # still ours: it would have exited on a taken port
                    return data
            except (httpx.HTTPError, KeyError, TypeError, ValueError):
                pass
            time.sleep(1)
        err = proc.stderr.read1(8000).decode(errors="replace") if proc.poll() is not None else ""
        raise (PortTaken if port_taken(err) else AssertionError)(f"web UI did not come up: {err}")
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_webserver_shows_the_asset_graph(tmp_path, sample_repo):
    data = on_a_free_port(lambda port: _graph_from_webserver(port, sample_repo, tmp_path))

    nodes = {"/".join(n["assetKey"]["path"]): n for n in data["assetNodes"]}
    assert {"git_repository", "source_files", "deduplicated_chunks", "training_dataset", "fine_tuned_adapter",
            "evaluation_report", "merged_model", "gguf_model", "ollama_modelfile"} <= set(nodes)
    assert [d["path"] for d in nodes["code_chunks"]["dependencyKeys"]] == [["clean_files"]]
    assert nodes["gguf_model"]["groupName"] == "deployment"
    repo = data["repositoriesOrError"]["nodes"][0]
    assert {"data_refresh_job", "retrain_job"} <= {j["name"] for j in repo["jobs"]}
    assert repo["schedules"] == []
    assert {s["name"] for s in repo["sensors"]} == {"new_commit_sensor", "tracker_sensor", "data_automation_sensor",
                                                     "model_automation_sensor"}
