"""The Dagster web UI serves this code location: the whole asset graph, jobs and sensors."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx

from mochi_pipeline_tests.loopback import free_port

ROOT = Path(__file__).resolve().parent.parent
QUERY = """
{ assetNodes { assetKey { path } groupName dependencyKeys { path } }
  repositoriesOrError { ... on RepositoryConnection { nodes { jobs { name } schedules { name } sensors { name } } } } }
"""


def test_webserver_shows_the_asset_graph(tmp_path, sample_repo):
    port = free_port()
    env = {**{k: v for k, v in os.environ.items() if k != "MOCHI_CONFIG"}, "DAGSTER_HOME": str(tmp_path)}
    webserver = Path(sys.executable).parent / "dagster-webserver"
    proc = subprocess.Popen([str(webserver), "-w", str(ROOT / "workspace.yaml"), "-h", "127.0.0.1", "-p", str(port)],
                            cwd=sample_repo, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 180
        data = None
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                reply = httpx.post(f"http://127.0.0.1:{port}/graphql", json={"query": QUERY}, timeout=10)
                data = reply.json()["data"]
                if data["assetNodes"]:
                    break
            except (httpx.HTTPError, KeyError, TypeError, ValueError):
                pass
            time.sleep(1)
        assert data and data["assetNodes"], f"web UI did not come up: {proc.stderr.read1(4000) if proc.poll() else ''}"
    finally:
        proc.terminate()
        proc.wait(timeout=30)

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
