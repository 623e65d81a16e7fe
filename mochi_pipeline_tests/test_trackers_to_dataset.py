"""Issue trackers and CI logs, as a user switches them on: a token in the environment, a URL in
mochi.yaml, and their threads and failed jobs become training data shown per source.

The real clients (PyGithub, python-gitlab, jira) talk to loopback stand-ins speaking each service's wire format.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import dagster as dg
import pytest

from mochi_pipeline.definitions import build_defs
from mochi_pipeline.ingestion.assets import MissingToken, observe_activity, service_resources
from mochi_pipeline.io_manager import read_asset_file
from mochi_pipeline.report import print_report
from mochi_pipeline_tests.ingestion.ci_wire import (
    GO_TEST_GITLAB_LOG,
    PYTEST_GITHUB_LOG,
    GitHubActionsServer,
    GitLabServer,
)
from mochi_pipeline_tests.ingestion.tracker_wire import GitHubStandIn, GitLabStandIn, Item, JiraStandIn, Note
from mochi_pipeline_tests.materialize import DATA_ASSETS, materialize, project_config
from mochi_pipeline_tests.repo_factory import commit, make_sample_repo
from mochi_pipeline_tests.sensor_ticks import sensor_tick

ISSUES_TOKEN = "ghp_IssuesLoopbackToken0123456789abcdefAB"
CI_TOKEN = "ghp_LoopbackToken0123456789abcdefABCDEF"
LEAKED = "ghp_" + "Zq8Xv2Lr5Nt1Kp7Wm4Yc9Bd3Fg6Hj0Ls2Qa5E"  # pasted into a comment by a careless user
REPORT = """When the settings file exists but is empty, `load_settings` raises a JSONDecodeError instead of
returning the defaults. Steps: create an empty settings.json, call load_settings('settings.json').
Expected: an empty dict. Actual: json.decoder.JSONDecodeError: Expecting value: line 1 column 1."""


def _history(repo: Path) -> dict[str, str]:
    """Two fixes on top of the sample repository: one closes issue #1, one makes CI pass again."""
    return {
        "break": commit(repo, "Tighten settings parsing", "2024-03-01T09:00:00+00:00",
                        {"pkg/settings.py": "import json\n\n\ndef load_settings(path):\n"
                                            "    with open(path) as fh:\n        return json.load(fh)\n"}),
        "fix_issue": commit(repo, "Return the defaults for an empty settings file (#1)", "2024-03-02T12:00:00+00:00",
                            {"pkg/settings.py": "import json\n\n\ndef load_settings(path):\n"
                                                "    with open(path) as fh:\n        text = fh.read()\n"
                                                "    return json.loads(text) if text.strip() else {}\n"}),
        "fix_ci": commit(repo, "Expect POST in the endpoint test", "2024-03-03T08:00:00+00:00",
                         {"tests/test_api.py": "def test_endpoint():\n    assert 'POST' == 'POST'\n"}),
    }


def _items(shas: dict[str, str]) -> list[Item]:
    return [
        Item(1, "load_settings crashes on an empty settings file", "2024-03-01T10:00:00Z", "2024-03-02T12:00:00Z",
             author="alice", body=REPORT, state="closed", closed="2024-03-02T12:00:00Z", labels=["bug"],
             closing_commit=shas["fix_issue"], notes=[
                 Note("bob", f"Same here. @alice which version? My CI uses token {LEAKED} fwiw.",
                      "2024-03-01T11:00:00Z"),
                 Note("dependabot[bot]", "Bumps requests from 2.31.0 to 2.32.0.", "2024-03-01T12:00:00Z", bot=True),
             ]),
        Item(2, "Return the defaults for an empty settings file", "2024-03-02T09:00:00Z", "2024-03-02T11:59:00Z",
             kind="pull", author="carol", body="Fixes #1: an empty settings file now gives the defaults, as the "
             "documentation of load_settings promises. Includes the reproduction from the issue.",
             state="merged", closed="2024-03-02T12:00:00Z", merge_sha=shas["fix_issue"]),
    ]


def _ci_runs(server: GitHubActionsServer, shas: dict[str, str]) -> None:
    server.add_run("CI", "main", shas["fix_issue"], "2024-03-02T12:05:00Z", [("test", "failure", PYTEST_GITHUB_LOG)])
    server.add_run("CI", "main", shas["fix_ci"], "2024-03-03T08:05:00Z", [("test", "success", "ok\n")])


def _rows(cfg) -> list[dict]:
    dataset = cfg.artifacts_path / "dataset"
    return [json.loads(line) for split in ("train", "eval")
            for line in (dataset / f"{split}.jsonl").read_text().splitlines() if line.strip()]


def _meta(result, key: str) -> dict:
    return {k: v.value for k, v in result.asset_materializations_for_node(key)[0].metadata.items()}


@pytest.fixture
def services(tmp_path, monkeypatch):
    repo = make_sample_repo(tmp_path / "src")
    shas = _history(repo)
    monkeypatch.setenv("MOCHI_TEST_ISSUES_TOKEN", ISSUES_TOKEN)
    monkeypatch.setenv("MOCHI_TEST_CI_TOKEN", CI_TOKEN)
    with GitHubStandIn(ISSUES_TOKEN, _items(shas)) as issues, GitHubActionsServer(token=CI_TOKEN) as ci:
        _ci_runs(ci, shas)
        cfg = project_config(
            tmp_path, repo={"source": str(repo)},
            trackers={"github": {"repo": issues.repo, "url": f"{issues.url}/api/v3",
                                 "token_env": "MOCHI_TEST_ISSUES_TOKEN", "discussions": False}},
            ci={"github_actions": {"repo": ci.repo, "url": ci.url, "token_env": "MOCHI_TEST_CI_TOKEN"}},
        )
        yield cfg, shas, issues, ci


def test_threads_and_failed_jobs_become_training_data_per_source(services, capsys):
    cfg, shas, issues, _ = services
    instance = dg.DagsterInstance.ephemeral()
    result = materialize(cfg, DATA_ASSETS, instance=instance)
    assert result.success

    threads = _meta(result, "issue_threads")
    assert threads["threads"] == 2 and threads["fetched_this_run"] == {"github": 2}
    assert _meta(result, "ci_failures")["fixed"] == 1
    cleaned = _meta(result, "clean_issue_threads")
    assert cleaned["dropped_comments"].get("bot") == 1 and cleaned["replaced"]

    meta = _meta(result, "training_dataset")
    assert sum(meta["by_generator"]["issue_pairs"].values()) >= 2  # the issue and its pull request
    assert sum(meta["by_generator"]["ci_fix_pairs"].values()) == 1
    assert "| issue_pairs | issue trackers |" in meta["by_source"]
    assert "| ci_fix_pairs | CI logs |" in meta["by_source"]
    checks = {e.check_name: e.passed for e in result.get_asset_check_evaluations()}
    assert checks["no_secrets_in_training_data"]

    print_report(cfg, instance, build_defs(cfg))
    assert "Training examples by source:" in capsys.readouterr().out

    rows = _rows(cfg)
    resolution = next(r for r in rows if r["task"] == "issue_resolution")
    assert "load_settings crashes on an empty settings file" in resolution["text"]
    assert "if text.strip() else {}" in resolution["response"]  # the closing commit's diff
    ci_fix = next(r for r in rows if r["task"] == "ci_fix")
    assert "AssertionError" in ci_fix["text"] and "'POST' == 'POST'" in ci_fix["response"]
    everything = "\n".join(json.dumps(r) for r in rows)
    for never in (LEAKED, "alice", "bob", "carol", "dependabot", "Bumps requests"):
        assert never not in everything
    # Tokens never reach an artifact (the stored threads included) or Dagster's event log.
    for path in cfg.artifacts_path.rglob("*"):
        if path.is_file() and path.suffix in (".json", ".jsonl"):
            text = path.read_text(errors="replace")
            assert ISSUES_TOKEN not in text and CI_TOKEN not in text, path
    logs = "\n".join(str(e.user_message) for e in instance.all_logs(result.run_id))
    assert ISSUES_TOKEN not in logs and CI_TOKEN not in logs

    # A second run reads only what changed since the last one, through the updated-since cursor.
    issue = issues.item(1)
    issue.updated = "2024-03-05T09:00:00Z"
    issue.notes.append(Note("dave", "Confirmed fixed in the nightly build, thanks for the quick turnaround!",
                            "2024-03-05T09:00:00Z"))
    before = len(issues.seen("/api/v3/repos/octo/widgets/issues"))
    again = materialize(cfg, ["issue_threads"], instance=instance)
    listed = [r for r in issues.seen("/api/v3/repos/octo/widgets/issues")[before:]
              if r.path.endswith("/issues")]
    assert listed[0].query["since"] == "2024-03-02T12:00:00Z"
    meta = _meta(again, "issue_threads")
    assert meta["fetched_this_run"] == {"github": 1} and meta["threads"] == 2 and meta["comments"] == 3
    stored = read_asset_file(cfg.artifacts_path / "assets" / "issue_threads.jsonl")
    assert {t.updated_at for t in stored if t.number == "1"} == {"2024-03-05T09:00:00Z"}


def test_activity_moves_only_when_a_service_changed(services, monkeypatch):
    cfg, _, issues, ci = services
    resources = service_resources(cfg.trackers, cfg.ci, environ=os.environ)
    first, metadata = observe_activity(resources)
    assert observe_activity(resources)[0] == first
    assert metadata["latest_update"].value == {"trackers.github": "2024-03-02T12:00:00Z",
                                               "ci.github_actions": "2024-03-03T08:09:00Z"}
    issues.item(2, "pull").updated = "2024-03-06T10:00:00Z"
    assert observe_activity(resources)[0] != first

    monkeypatch.delenv("MOCHI_TEST_CI_TOKEN")
    with pytest.raises(MissingToken, match=r"ci\.github_actions is on, but the environment variable "
                                           r"MOCHI_TEST_CI_TOKEN \(ci\.github_actions\.token_env\) is not set"):
        service_resources(cfg.trackers, cfg.ci, environ=os.environ)


def test_a_refused_token_fails_the_asset_naming_the_setting(services, monkeypatch):
    cfg, *_ = services
    monkeypatch.setenv("MOCHI_TEST_ISSUES_TOKEN", "ghp_wrong")
    result = materialize(cfg, ["issue_threads"], raise_on_error=False)
    assert not result.success
    failure = next(e for e in result.all_events if e.is_step_failure)
    message = failure.step_failure_data.user_failure_data.description
    assert "rejected the token" in message and "trackers.github.token_env" in message
    assert "ghp_wrong" not in message


def test_without_trackers_the_assets_are_empty_and_say_how_to_turn_them_on(sample_repo, tmp_path):
    cfg = project_config(tmp_path, repo={"source": str(sample_repo)})
    result = materialize(cfg, ["issue_threads", "ci_failures"])
    assert _meta(result, "issue_threads")["trackers"] == "none set (trackers.* in mochi.yaml)"
    assert _meta(result, "ci_failures")["failures"] == 0


def _tracker_tick(defs: dg.Definitions, instance: dg.DagsterInstance, cursor: str | None):
    return sensor_tick(defs, instance, cursor, name="tracker_sensor")


def test_new_tracker_activity_rebuilds_the_tracker_side_of_the_dataset(services):
    cfg, _, issues, _ = services
    defs = build_defs(cfg)
    instance = dg.DagsterInstance.ephemeral()
    cursor = _tracker_tick(defs, instance, None).cursor
    assert materialize(cfg, DATA_ASSETS, instance=instance).success
    data = dg.AssetSelection.groups("ingestion", "preprocessing", "data_generation")
    tick = dg.evaluate_automation_conditions(defs=defs, instance=instance, asset_selection=data)
    assert not tick._requested_partitions_by_asset_key  # noqa: SLF001
    assert isinstance(_tracker_tick(defs, instance, cursor), dg.SkipReason)  # nothing changed

    issues.item(1).updated = "2024-03-07T10:00:00Z"
    assert _tracker_tick(defs, instance, cursor).cursor != cursor
    tick = dg.evaluate_automation_conditions(defs=defs, instance=instance, asset_selection=data, cursor=tick.cursor)
    assert {k.to_user_string() for k in tick._requested_partitions_by_asset_key} == {  # noqa: SLF001
        "issue_threads", "ci_failures", "clean_issue_threads", "clean_ci_failures", "issue_pairs", "ci_fix_pairs",
        "training_dataset"}


def test_gitlab_jira_and_gitlab_ci_become_training_data_too(tmp_path, monkeypatch):
    repo = make_sample_repo(tmp_path / "src")
    shas = _history(repo)
    jira_fix = commit(repo, "MOCHI-4: document the empty-file behaviour", "2024-03-04T08:00:00+00:00",
                      {"docs/settings.md": "# Settings\n\nAn empty settings file gives the defaults.\n"})
    monkeypatch.setenv("MOCHI_TEST_GITLAB_TOKEN", "glpat-TrackerLoopbackToken01")
    monkeypatch.setenv("MOCHI_TEST_GITLAB_CI_TOKEN", "glpat-LoopbackToken0123456789")
    monkeypatch.setenv("MOCHI_TEST_JIRA_TOKEN", "jira-pat-loopback-0123456789")
    gitlab_issue = Item(3, "load_settings crashes on an empty settings file", "2024-03-01T10:00:00Z",
                        "2024-03-02T12:00:00Z", author="erin", body=REPORT, state="closed",
                        closed="2024-03-02T12:00:00Z", closing_commit=shas["fix_issue"])
    jira_issue = Item(4, "Document what an empty settings file does", "2024-03-03T10:00:00Z", "2024-03-04T09:00:00Z",
                      author="frank", body=REPORT.replace("raises", "should document that it raises"),
                      state="closed", closed="2024-03-04T09:00:00Z")
    with (GitLabStandIn("glpat-TrackerLoopbackToken01", [gitlab_issue]) as gitlab,
          JiraStandIn("jira-pat-loopback-0123456789", [jira_issue]) as jira,
          GitLabServer() as gitlab_ci):
        gitlab_ci.add_pipeline("main", shas["fix_issue"], "2024-03-02T12:05:00Z",
                               [("test", "failed", GO_TEST_GITLAB_LOG)])
        gitlab_ci.add_pipeline("main", shas["fix_ci"], "2024-03-03T08:05:00Z", [("test", "success", "ok\n")])
        cfg = project_config(
            tmp_path, repo={"source": str(repo)},
            trackers={"gitlab": {"project": gitlab.project, "url": gitlab.url, "token_env": "MOCHI_TEST_GITLAB_TOKEN"},
                      "jira": {"project": jira.project, "url": jira.url, "token_env": "MOCHI_TEST_JIRA_TOKEN"}},
            ci={"gitlab_ci": {"project": gitlab_ci.project, "url": gitlab_ci.url,
                              "token_env": "MOCHI_TEST_GITLAB_CI_TOKEN"}},
        )
        result = materialize(cfg, DATA_ASSETS)
    assert result.success
    assert _meta(result, "issue_threads")["by_tracker_and_kind"] == {"gitlab issue": 1, "jira issue": 1}
    assert _meta(result, "ci_failures")["by_system"] == {"gitlab_ci": 1}
    rows = _rows(cfg)
    resolutions = {r["path"]: r for r in rows if r["task"] == "issue_resolution"}
    assert "if text.strip() else {}" in resolutions["gitlab:acme/tools/widgets#3"]["response"]
    assert resolutions["jira:MOCHI-4"]["commit"] == jira_fix  # the commit naming the issue key
    assert any(r["task"] == "ci_fix" and "'POST' == 'POST'" in r["response"] for r in rows)
