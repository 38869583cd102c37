"""``bmxgc demo``: the incident replayed offline, with the real command output.

A local S3 server (moto) on a free loopback port, a SQLite database shaped
like the app's (image keys stored without ``books/``), and bmxgc run as a
user would run it, in a subprocess, at each step. Exits 0 only if every step
behaved as described.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import socket
import sqlite3
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from bmxgc import s3

Echo = Callable[[str], None]

BUCKET = "bluemoxon-images-demo"
BOOKS = 40  # books 1..36 are in the database, 37..40 were removed from it
BOOKS_IN_DB = 36
IMAGES_PER_BOOK = 3
OTHER_PREFIXES = {"listings/": 30, "images/": 10, "lambda/": 3, "prompts/": 2}


@dataclass
class DemoWorld:
    workdir: Path
    endpoint: str
    database: Path

    def expected_orphans(self) -> set[str]:
        return {
            f"books/{book}/image_{i:02d}.webp"
            for book in range(BOOKS_IN_DB + 1, BOOKS + 1)
            for i in range(IMAGES_PER_BOOK)
        }


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _seed(world: DemoWorld) -> None:
    client = s3.make_client(world.endpoint, "us-east-1")
    client.create_bucket(Bucket=BUCKET)
    client.put_bucket_versioning(Bucket=BUCKET, VersioningConfiguration={"Status": "Enabled"})
    for book in range(1, BOOKS + 1):
        for i in range(IMAGES_PER_BOOK):
            client.put_object(Bucket=BUCKET, Key=f"books/{book}/image_{i:02d}.webp", Body=b"webp" * book)
    for prefix, count in OTHER_PREFIXES.items():
        for i in range(count):
            client.put_object(Bucket=BUCKET, Key=f"{prefix}item_{i:03d}", Body=b"x")
    db = sqlite3.connect(world.database)
    db.execute("CREATE TABLE book_images (id INTEGER PRIMARY KEY, s3_key TEXT)")
    rows = [
        (f"{book}/image_{i:02d}.webp",) for book in range(1, BOOKS_IN_DB + 1) for i in range(IMAGES_PER_BOOK)
    ]
    db.executemany("INSERT INTO book_images (s3_key) VALUES (?)", rows + [(None,)])
    db.commit()
    db.close()


def _write_config(world: DemoWorld, name: str, prefix: str, template: str) -> Path:
    path = world.workdir / name
    path.write_text(
        f"""plans_dir = "plans"

[s3]
bucket = "{BUCKET}"
prefix = "{prefix}"
endpoint_url = "{world.endpoint}"
region = "us-east-1"

[database]
url = "sqlite:///{world.database}"

[[references]]
name = "book_images"
query = "SELECT s3_key FROM book_images"
keys = ["{template}"]

[safety]
min_age = "0s"   # the demo's objects were uploaded a moment ago
""",
        encoding="utf-8",
    )
    return path


class _Steps:
    def __init__(self, world: DemoWorld, echo: Echo) -> None:
        self.world = world
        self.echo = echo
        self.failures: list[str] = []

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        self.echo(f"$ bmxgc {' '.join(args)}")
        proc = subprocess.run(
            [sys.executable, "-m", "bmxgc", *args],
            cwd=self.world.workdir,
            capture_output=True,
            text=True,
            # The demo's own config and database, whatever the caller has set.
            env={
                **{k: v for k, v in os.environ.items() if k not in ("BMXGC_CONFIG", "BMXGC_DATABASE_URL")},
                "BMXGC_CONFIG": "",
            },
            timeout=120,
        )
        for line in (proc.stdout + proc.stderr).rstrip().splitlines():
            self.echo(f"    {line}")
        self.echo(f"    (exit {proc.returncode})")
        return proc

    def check(self, ok: bool, description: str) -> None:
        self.echo(f"{'  ok ' if ok else 'FAIL '} {description}")
        if not ok:
            self.failures.append(description)

    def heading(self, text: str) -> None:
        self.echo("")
        self.echo(f"== {text}")


def _plan_path(proc: subprocess.CompletedProcess[str]) -> Path | None:
    for line in proc.stdout.splitlines():
        if line.startswith("Saved:"):
            return Path(line.split(":", 1)[1].strip())
    return None


def _snapshot(world: DemoWorld) -> dict[str, tuple[str, str]]:
    """Every current object in the bucket (but bmxgc's lock folder): key -> (version id, ETag)."""
    client = s3.make_client(world.endpoint, "us-east-1")
    return {
        row.key: (row.version_id, row.etag)
        for row in s3.list_versions(client, BUCKET, "")
        if row.is_latest and not row.is_delete_marker and not row.key.startswith(".bmxgc/")
    }


def run_demo(echo: Echo = print) -> int:
    try:
        from moto.server import ThreadedMotoServer
    except ImportError:
        echo("Error: the demo needs moto's S3 server: pip install 'bmxgc[demo]'")
        return 1
    # The local server's request log would bury the story.
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    workdir = Path(tempfile.mkdtemp(prefix="bmxgc-demo-"))
    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    # Dummy credentials for the local server only; never real ones.
    saved_env = {k: os.environ.get(k) for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")}
    os.environ.update({"AWS_ACCESS_KEY_ID": "demo", "AWS_SECRET_ACCESS_KEY": "demo"})
    server.start()
    try:
        world = DemoWorld(workdir=workdir, endpoint=f"http://127.0.0.1:{port}", database=workdir / "app.db")
        _seed(world)
        return _story(world, echo)
    finally:
        server.stop()
        for key, value in saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        shutil.rmtree(workdir, ignore_errors=True)


def _story(world: DemoWorld, echo: Echo) -> int:
    steps = _Steps(world, echo)
    start = _snapshot(world)
    total_books = BOOKS * IMAGES_PER_BOOK
    echo(f"A versioned bucket on a local S3 server ({world.endpoint}) holds {total_books} images under books/")
    echo(f"and {sum(OTHER_PREFIXES.values())} objects under {', '.join(OTHER_PREFIXES)}.")
    echo(f"The app's database stores {BOOKS_IN_DB * IMAGES_PER_BOOK} image keys WITHOUT the books/ prefix,")
    echo(f"e.g. '1/image_00.webp'. Books {BOOKS_IN_DB + 1}..{BOOKS} were removed: their "
         f"{(BOOKS - BOOKS_IN_DB) * IMAGES_PER_BOOK} images are the true orphans.")

    steps.heading("1. The incident's config: the whole bucket. Refused before anything is read.")
    whole = _write_config(world, "whole-bucket.toml", "", "{value}")
    proc = steps.run("-c", whole.name, "plan")
    steps.check(proc.returncode == 1 and "s3.prefix" in proc.stderr, "an empty prefix is a config error (exit 1)")

    steps.heading("2. The incident's mapping: S3 keys compared with database values that never match.")
    naive = _write_config(world, "naive.toml", "books/", "{value}")
    proc = steps.run("-c", naive.name, "plan")
    naive_plan = _plan_path(proc)
    steps.check(proc.returncode == 0 and naive_plan is not None, "the plan is written, for the record")
    steps.check(
        "0 of 108 referenced keys exist under books/: the key mapping is probably wrong" in proc.stdout,
        "it says loudly that the key mapping is wrong",
    )
    steps.check("apply will refuse this plan" in proc.stdout, "it says that apply will refuse it")
    if naive_plan is not None:
        doc = json.loads((world.workdir / naive_plan).read_text(encoding="utf-8"))
        outside = [o["key"] for o in doc["orphans"] if not o["key"].startswith("books/")]
        steps.check(not outside, "nothing outside books/ is in the plan, even with the wrong mapping")

    steps.heading("3. The right mapping: keys = [\"books/{value}\"].")
    good = _write_config(world, "bmxgc.toml", "books/", "books/{value}")
    proc = steps.run("-c", good.name, "plan", "--detailed-exitcode")
    good_plan = _plan_path(proc)
    steps.check(proc.returncode == 2 and good_plan is not None, "orphans found: --detailed-exitcode exits 2")
    if good_plan is not None:
        doc = json.loads((world.workdir / good_plan).read_text(encoding="utf-8"))
        found = {o["key"] for o in doc["orphans"]}
        steps.check(found == world.expected_orphans(), f"the plan holds exactly the {len(found)} true orphans")
        steps.check(not doc["warnings"][:1] or "mapping" not in doc["warnings"][0], "no mapping warning")

        steps.heading("4. Review it as a pull request would: offline, no S3, no database.")
        proc = steps.run("verify", str(good_plan))
        steps.check(proc.returncode == 0, "verify: the hash matches the content")
        proc = steps.run("show", str(good_plan), "--format", "markdown")
        steps.check(proc.returncode == 0 and "### bmxgc plan" in proc.stdout, "show renders a PR comment")
        if naive_plan is not None:
            proc = steps.run("diff", str(naive_plan), str(good_plan))
            steps.check(proc.returncode == 0, "diff: what changed between the wrong and the right plan")

        steps.heading("5. A plan edited after review is refused.")
        forged = world.workdir / "plans" / "forged.json"
        forged.write_text(
            (world.workdir / good_plan).read_text(encoding="utf-8").replace("books/37/", "books/1/"),
            encoding="utf-8",
        )
        proc = steps.run("verify", str(forged.relative_to(world.workdir)))
        steps.check(proc.returncode == 3 and "plan_hash does not match" in proc.stderr, "forged plan: exit 3")
        proc = steps.run("-c", good.name, "apply", str(forged.relative_to(world.workdir)), "--auto-approve")
        steps.check(proc.returncode == 3 and _snapshot(world) == start, "apply refuses it too; bucket unchanged")

    if naive_plan is not None:
        steps.heading("6. Apply the incident's plan: refused, even when told a high ratio is fine.")
        proc = steps.run("-c", naive.name, "apply", str(naive_plan), "--auto-approve")
        steps.check(proc.returncode == 3 and "gate 'volume'" in proc.stderr, "refused by the volume gate (exit 3)")
        proc = steps.run("-c", naive.name, "apply", str(naive_plan), "--auto-approve", "--max-orphan-ratio", "1")
        steps.check(proc.returncode == 3 and "mapping is wrong" in proc.stderr, "a wrong mapping is never overridden")
        steps.check(_snapshot(world) == start, "nothing in the bucket changed")

    if good_plan is not None:
        steps.heading("7. Apply the reviewed plan: delete markers, a receipt with every version id.")
        proc = steps.run("-c", good.name, "apply", str(good_plan), "--auto-approve")
        now = _snapshot(world)
        gone = set(start) - set(now)
        steps.check(proc.returncode == 0 and gone == world.expected_orphans(), "exactly the 12 orphans are deleted")
        steps.check(all(now[k] == start[k] for k in now), "every other object is untouched")

        steps.heading("8. Undo: remove exactly the markers apply wrote; then once more, which changes nothing.")
        proc = steps.run("-c", good.name, "undo", "--auto-approve")
        steps.check(proc.returncode == 0 and "12 restored" in proc.stdout, "12 restored")
        proc = steps.run("-c", good.name, "undo", "--auto-approve")
        steps.check(proc.returncode == 0 and "0 restored" in proc.stdout, "a second undo restores nothing")
        steps.check(
            _snapshot(world) == start,
            f"the bucket is exactly as it began: {len(start)} objects, same version ids and ETags",
        )

    echo("")
    if steps.failures:
        echo(f"Demo FAILED: {len(steps.failures)} step(s) did not behave as described.")
        return 1
    echo("Demo complete: every step behaved as described.")
    return 0
