"""The documented pull-request workflow (docs/workflows/), run as its commands,
in its order, against moto's S3 server, in a real git repository:

plan.yml    bmxgc plan --detailed-exitcode (exit 2), the one new file under
            plans/, committed on bmxgc/plan-<stamp>, PR body from
            ``bmxgc show --format markdown``;
verify.yml  the plans/ rule script itself, on GitHub's test merge (HEAD^1 is
            the base), which runs ``bmxgc verify`` and ``bmxgc show``;
merge;
apply.yml   the plans the push added, ``bmxgc apply --auto-approve``, the
            receipt committed back; then ``bmxgc history`` shows it applied.

bmxgc runs as a user runs it: ``python -m bmxgc`` (and ``bmxgc`` on PATH for
the verify script), in a separate process.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable

import pytest

from apply_support import World, empty_world
from servers import sqlite_file
from support import CliResult, config_doc, write_toml

REPO = Path(__file__).resolve().parent.parent
WORKFLOWS = REPO / "docs" / "workflows"
ORPHANS = [f"books/{n}/image_00.webp" for n in (101, 102, 103)]

Run = Callable[..., CliResult]


def git(repo: Path, *args: str) -> str:
    env = {
        **os.environ,
        "GIT_AUTHOR_NAME": "bmxgc",
        "GIT_AUTHOR_EMAIL": "bmxgc@example.invalid",
        "GIT_COMMITTER_NAME": "bmxgc",
        "GIT_COMMITTER_EMAIL": "bmxgc@example.invalid",
        "GIT_CONFIG_GLOBAL": os.devnull,
        "GIT_CONFIG_NOSYSTEM": "1",
    }
    done = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, env=env)
    assert done.returncode == 0, f"git {' '.join(args)}: {done.stderr}"
    return done.stdout


def verify_rule_script() -> str:
    """The plans/ rule, exactly as verify.yml runs it (``shell: python``)."""
    import yaml

    workflow = yaml.safe_load((WORKFLOWS / "verify.yml").read_text(encoding="utf-8"))
    [step] = [s for s in workflow["jobs"]["verify"]["steps"] if s.get("shell") == "python"]
    return str(step["run"])


@pytest.fixture
def repo(bucket: Any, tmp_path: Path) -> tuple[Path, World]:
    """A repository on main with bmxgc.toml (no database URL: it comes from the
    environment, as the workflows pass it) and a bucket with 3 orphans."""
    scene = empty_world(bucket, sqlite_file(tmp_path / "app.db"), tmp_path)
    scene.reference(f"{n}/image_00.webp" for n in range(1, 11))
    scene.books(range(1, 11))
    scene.books([101, 102, 103])
    root = tmp_path / "repo"
    root.mkdir()
    doc = config_doc(bucket=scene.name, endpoint=bucket.endpoint, database_url=None,
                     references=scene.config_doc()["references"])
    write_toml(root / "bmxgc.toml", doc)
    (root / ".gitignore").write_text("bmxgc-run/\npr-body.md\n")
    git(root, "init", "-q", "-b", "main")
    git(root, "add", "bmxgc.toml", ".gitignore")
    git(root, "commit", "-q", "-m", "bmxgc config")
    return root, scene


@pytest.fixture
def bmxgc_in(cli_process: Run, repo: tuple[Path, World]) -> Run:
    """``python -m bmxgc ARGS`` in the repository, with BMXGC_DATABASE_URL set."""
    root, scene = repo

    def run(*args: str) -> CliResult:
        cwd = os.getcwd()
        os.chdir(root)
        try:
            return cli_process(*args, env={"BMXGC_DATABASE_URL": scene.db.url})
        finally:
            os.chdir(cwd)

    return run


@pytest.fixture
def bmxgc_here(cli: Run, repo: tuple[Path, World], monkeypatch: pytest.MonkeyPatch) -> Run:
    """The same commands in this process (faster), for the steps a test is not about."""
    root, scene = repo
    monkeypatch.chdir(root)
    monkeypatch.setenv("BMXGC_DATABASE_URL", scene.db.url)
    return cli


def run_verify_check(root: Path, base: str, head: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    """GitHub's test merge of ``head`` into ``base``, then verify.yml's script on it."""
    git(root, "switch", "-q", "--detach", base)
    git(root, "merge", "-q", "--no-ff", "-m", "test merge", head)
    script = tmp_path / "verify-rule.py"
    script.write_text(verify_rule_script(), encoding="utf-8")
    summary = tmp_path / "step-summary.md"
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        "GITHUB_STEP_SUMMARY": str(summary),
    }
    try:
        return subprocess.run(
            [sys.executable, str(script)], cwd=root, capture_output=True, text=True, env=env, timeout=120
        )
    finally:
        git(root, "switch", "-q", base)


def plan_on_a_branch(root: Path, bmxgc: Run) -> tuple[str, str]:
    """plan.yml: plan, find the one new file, commit it on its own branch."""
    planned = bmxgc("plan", "--detailed-exitcode")
    assert planned.code == 2, planned.output  # orphans: a plan to review
    new = git(root, "ls-files", "--others", "--exclude-standard", "--", "plans/").split()
    assert len(new) == 1, new
    [plan] = new
    branch = "bmxgc/plan-" + Path(plan).stem.split("-")[0]
    git(root, "switch", "-q", "-c", branch)
    git(root, "add", "--", plan)
    shown = bmxgc("show", "--format", "json", plan)
    assert shown.code == 0, shown.output
    summary = json.loads(shown.out)
    git(root, "commit", "-q", "-m", f"bmxgc plan: {summary['stats']['orphans']} orphans in "
        f"s3://{summary['bucket']}/{summary['prefix']}", "--", plan)
    git(root, "switch", "-q", "main")
    return plan, branch


def test_pr_workflow_plan_review_merge_apply_in_order(
    repo: tuple[Path, World], bmxgc_in: Run, tmp_path: Path
) -> None:
    root, scene = repo
    plan, branch = plan_on_a_branch(root, bmxgc_in)
    git(root, "switch", "-q", branch)

    # The pull request's body: a reviewer decides from it alone.
    body = bmxgc_in("show", "--format", "markdown", plan)
    assert body.code == 0, body.output
    assert body.out.startswith(f"### bmxgc plan: 3 to delete from `s3://{scene.name}/books/`")
    assert "No warnings." in body.out
    for key in ORPHANS:
        assert key in body.out
    git(root, "switch", "-q", "main")

    # The required check, on the test merge.
    check = run_verify_check(root, "main", branch, tmp_path)
    assert check.returncode == 0, check.stdout + check.stderr
    assert "1 plan(s) added" in check.stdout and "plans/ rule: OK" in check.stdout
    assert f"OK: {plan} is an intact format_version 1 plan" in check.stdout
    assert "3 to delete" in (tmp_path / "step-summary.md").read_text(encoding="utf-8")
    assert all(scene.now(k) is not None for k in ORPHANS)  # nothing deleted yet

    # Approved and merged.
    before = git(root, "rev-parse", "HEAD").strip()
    git(root, "merge", "-q", "--no-ff", "-m", f"Merge {branch}", branch)

    # apply.yml: the plans this push added, oldest first, applied, receipts committed.
    added = git(root, "diff", "--no-renames", "--diff-filter=A", "--name-only", before, "HEAD", "--", "plans/").split()
    to_apply = sorted(p for p in added if not p.endswith((".receipt.json", ".undo.json")) and "-recover-" not in p)
    assert to_apply == [plan]
    receipt = f"plans/{Path(plan).stem}.receipt.json"
    assert not (root / receipt).exists()
    applied = bmxgc_in("apply", "--auto-approve", plan)
    assert applied.code == 0, applied.output
    assert "Apply complete! 3 deleted, 0 failed" in applied.out
    assert (root / receipt).exists()
    assert json.loads((root / receipt).read_text())["status"] == "complete"
    receipts = git(root, "ls-files", "--others", "--exclude-standard", "--", "plans/*.receipt.json").split()
    assert receipts == [receipt]
    git(root, "add", "--", *receipts)
    git(root, "commit", "-q", "-m", f"bmxgc apply: receipt {Path(receipt).name} [skip ci]")

    assert all(scene.now(k) is None for k in ORPHANS)
    assert all(scene.now(f"books/{n}/image_00.webp") is not None for n in range(1, 11))

    history = bmxgc_in("history")
    assert history.code == 0, history.output
    [line] = [line for line in history.out.splitlines() if Path(plan).name in line]
    assert " applied " in line

    assert git(root, "status", "--porcelain").strip() == ""


def test_pr_workflow_check_refuses_an_edited_plan_file(
    repo: tuple[Path, World], bmxgc_here: Run, bmxgc_in: Run, tmp_path: Path
) -> None:
    root, scene = repo
    plan, branch = plan_on_a_branch(root, bmxgc_here)
    git(root, "merge", "-q", "--no-ff", "-m", f"Merge {branch}", branch)

    # A pull request that edits the merged plan: one orphan swapped for a live key.
    git(root, "switch", "-q", "-c", "edit-plan")
    path = root / plan
    path.chmod(0o644)
    path.write_text(path.read_text().replace(ORPHANS[0], "books/1/image_00.webp"))
    git(root, "commit", "-q", "-am", "tweak the plan")

    verified = bmxgc_in("verify", plan)
    assert verified.code == 3, verified.output
    assert "plan_hash does not match" in verified.err
    assert "Traceback" not in verified.output

    git(root, "switch", "-q", "main")
    check = run_verify_check(root, "main", "edit-plan", tmp_path)
    assert check.returncode != 0, check.stdout
    assert f"::error file={plan}::modifies a plan file" in check.stdout
    assert all(scene.now(k) is not None for k in ORPHANS)
