"""The Dagster web UI, used as a person uses it: `mochi ui` opened in headless Chromium.

The project has been trained up to its evaluation report (`mochi run --select +evaluation_report`).
In the browser: each layer's asset group shows its assets with their kinds, the data assets are
materialized from the UI (a backfill: code_chunks is partitioned) and followed to success, and the
evaluation report's plot is opened from the asset's metadata. Screenshots land in ``$MOCHI_TEST_ARTIFACTS/ui`` (default
``test-artifacts/ui`` in the checkout) so a red run can be looked at.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import yaml

from mochi_pipeline_tests.cli_runner import PROJECT_TRAINING, mochi
from mochi_pipeline_tests.loopback import PortTaken, on_a_free_port, port_taken

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
SNAPSHOT = json.loads((Path(__file__).with_name("asset_graph_snapshot.json")).read_text())
CHROMIUM = "/usr/bin/chromium"  # Debian's (make system-deps): Playwright's browser download is unreachable
DATA_GROUPS = ("ingestion", "preprocessing", "data_generation")
SAMPLE_PARTITIONS = ["c", "cpp", "go", "java/sample", "pkg", "rust", "tests", "web"]  # its directories holding code
TRAINING = {**PROJECT_TRAINING, "max_steps": 4, "eval_max_examples": 8}

# What each graph node shows: its name and the kind tags under it.
NODES_JS = """() => Array.from(document.querySelectorAll('foreignObject')).map(fo => {
  const name = fo.querySelector('[data-tooltip]');
  const tags = Array.from(fo.querySelectorAll('[class*="OpTags_opTagsContainer"] > *')).map(t => t.textContent);
  return {name: name && name.getAttribute('data-tooltip'), tags};
}).filter(n => n.name)"""


def _norm(kind: str) -> str:
    """The UI writes kinds for people ("Hugging Face", "PyTorch"); compare letters and digits only."""
    return re.sub(r"[^a-z0-9]", "", kind.lower())


def _graphql(port: int, query: str) -> dict:
    return httpx.post(f"http://127.0.0.1:{port}/graphql", json={"query": query}, timeout=30).json()["data"]


@pytest.fixture
def shots() -> Path:
    root = Path(os.environ.get("MOCHI_TEST_ARTIFACTS") or ROOT / "test-artifacts") / "ui"
    root.mkdir(parents=True, exist_ok=True)
    return root


@pytest.fixture
def ui(sample_repo, tmp_path):
    """`mochi ui` on a project trained up to its evaluation report; yields the port."""
    repo = tmp_path / "repo"
    shutil.copytree(sample_repo, repo)
    (repo / ".gitignore").write_text(".mochi/\n")
    (repo / "mochi.yaml").write_text(yaml.safe_dump({"generation": {"eval_time_share": 0.3}, "training": TRAINING}))
    mochi(repo, "run", "--select", "+evaluation_report")

    procs: list[subprocess.Popen] = []
    try:
        yield on_a_free_port(lambda port: _start_ui(repo, port, tmp_path / f"ui-{port}.log", procs))
    finally:
        for proc in procs:
            _stop_group(proc)


def _start_ui(repo: Path, port: int, log_path: Path, procs: list[subprocess.Popen]) -> int:
    """`mochi ui --port port` answering GraphQL; ``PortTaken`` when another process took the port first."""
    env = {k: v for k, v in os.environ.items() if k not in ("MOCHI_CONFIG", "DAGSTER_HOME")}
    with log_path.open("wb") as log:
        # Its own process group: `dagster dev` runs the webserver and the daemon as children.
        proc = subprocess.Popen([sys.executable, "-m", "mochi_pipeline.cli", "ui", "--port", str(port)], cwd=repo,
                                env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    procs.append(proc)
    deadline = time.monotonic() + 180
    while True:
        text = log_path.read_text(errors="replace")
        if port_taken(text):
            _stop_group(proc)
            raise PortTaken(text[-3000:])
        assert proc.poll() is None, f"mochi ui exited: {text[-3000:]}"
        assert time.monotonic() < deadline, f"mochi ui did not come up: {text[-3000:]}"
        try:
            if _graphql(port, "{ assetNodes { id } }")["assetNodes"]:
                return port
        except (httpx.HTTPError, KeyError, TypeError, ValueError):
            pass
        time.sleep(1)


def _stop_group(proc: subprocess.Popen) -> None:
    """SIGTERM to `mochi ui`'s process group; SIGKILL to what is left a minute later (on 2 busy cores, `dagster
    dev` has taken longer than that to stop its webserver and daemon: clean-up, not what this test checks)."""
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + 60
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        pass
    try:
        while time.monotonic() < deadline:
            os.killpg(proc.pid, 0)
            time.sleep(0.5)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    except ProcessLookupError:
        pass


@pytest.fixture
def page(shots):
    from playwright.sync_api import sync_playwright

    if not Path(CHROMIUM).is_file():
        pytest.fail(f"{CHROMIUM} is missing: run `make system-deps` (installs Debian's chromium)")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True,
                                    args=["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"])
        context = browser.new_context(viewport={"width": 1920, "height": 1200})
        tab = context.new_page()
        tab.set_default_timeout(60_000)
        try:
            yield tab
        finally:
            tab.screenshot(path=shots / "last.png")
            browser.close()


def test_a_person_browses_the_graph_materializes_the_data_and_opens_the_plot(ui, page, shots):
    base = f"http://127.0.0.1:{ui}"
    page.goto(base)
    page.get_by_role("button", name="Skip").click()  # a first visit gets Dagster's "Join the community" dialog

    # Every layer's group shows its assets, each with its kinds.
    for group in ("ingestion", "preprocessing", "data_generation", "training", "deployment"):
        expected = {name: spec["kinds"] for name, spec in SNAPSHOT.items() if spec["group"] == group}
        page.goto(f"{base}/locations/mochi/asset-groups/{group}")
        page.get_by_text(next(iter(expected)), exact=True).first.wait_for()
        page.get_by_text("Loading...").first.wait_for(state="hidden")
        shown = {n["name"]: n["tags"] for n in page.evaluate(NODES_JS)}
        page.screenshot(path=shots / f"group_{group}.png")
        assert set(expected) <= set(shown), f"{group}: missing {set(expected) - set(shown)}"
        for name, kinds in expected.items():
            assert sorted(map(_norm, shown[name])) == sorted(map(_norm, kinds)), (group, name, shown[name])

    # Materialize the data assets from the lineage view, then follow the run to its end.
    # (git_repository and tracker_activity are observed, not materialized: they have no code version.)
    data_assets = [name for name, spec in SNAPSHOT.items() if spec["group"] in DATA_GROUPS and spec["has_code_version"]]
    page.goto(f"{base}/asset-groups")
    page.wait_for_load_state("networkidle")
    page.locator(".CodeMirror").filter(has=page.get_by_label("Search and filter assets")).click()
    page.keyboard.type(" or ".join(f'group:"{g}"' for g in DATA_GROUPS))
    page.keyboard.press("Enter")
    launch = page.get_by_role("button", name=f"Materialize all ({len(data_assets)})")
    launch.wait_for()  # the filter has been applied
    launch.click()
    # code_chunks is partitioned by directory: Dagster asks which partitions (all, by default) and launches a
    # backfill, whose runs go in order (what is above code_chunks, its partitions, what is below).
    dialog = page.get_by_role("dialog")
    dialog.get_by_role("button", name="All", exact=True).click()
    dialog.get_by_text(f"{len(SAMPLE_PARTITIONS)} partitions", exact=True).wait_for()
    page.screenshot(path=shots / "partition_dialog.png")
    dialog.get_by_role("button", name="Launch backfill").click()
    deadline = time.monotonic() + 60
    backfills: list = []
    while not backfills and time.monotonic() < deadline:
        backfills = _graphql(ui, "{ partitionBackfillsOrError { ... on PartitionBackfills { results { id } } } }")[
            "partitionBackfillsOrError"]["results"]
        time.sleep(1)
    assert len(backfills) == 1, "the UI launched no backfill"
    backfill = backfills[0]["id"]
    page.goto(f"{base}/runs/b/{backfill}")
    deadline = time.monotonic() + 900
    status = None
    while status not in ("COMPLETED", "COMPLETED_SUCCESS", "COMPLETED_FAILED", "FAILED", "CANCELED"):
        assert time.monotonic() < deadline, f"backfill {backfill} still {status}"
        time.sleep(3)
        status = _graphql(ui, f'{{ partitionBackfillOrError(backfillId: "{backfill}") {{ ... on PartitionBackfill '
                              "{ status } } }")["partitionBackfillOrError"]["status"]
    page.reload()
    page.wait_for_load_state("networkidle")
    page.screenshot(path=shots / "data_backfill.png")
    runs = _graphql(ui, f'{{ runsOrError(filter: {{tags: [{{key: "dagster/backfill", value: "{backfill}"}}]}}) '
                        "{ ... on Runs { results { status assetMaterializations { assetKey { path } } } } } }")[
        "runsOrError"]["results"]
    assert status in ("COMPLETED", "COMPLETED_SUCCESS") and {r["status"] for r in runs} == {"SUCCESS"}, (status, runs)
    assert len(runs) == 3  # above code_chunks, its partitions (16 to a run: one), below it
    materialized = {m["assetKey"]["path"][0] for r in runs for m in r["assetMaterializations"]}
    assert sorted(materialized) == sorted(data_assets)

    # The evaluation report's plot, opened from the asset's metadata.
    page.goto(f"{base}/assets/evaluation_report")
    page.get_by_placeholder("Filter metadata keys").fill("plot")
    page.get_by_text("[Show Markdown]").click()
    dialog = page.get_by_role("dialog")
    dialog.get_by_text("plot", exact=True).wait_for()  # the dialog of the "plot" entry
    image = dialog.locator("img")
    image.wait_for()
    page.wait_for_function("(img) => img.complete && img.naturalWidth > 100", arg=image.element_handle())  # decoded
    page.screenshot(path=shots / "evaluation_plot.png")
