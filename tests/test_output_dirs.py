"""Output directories are safe: one run at a time, nothing stranded by a killed run, only our
own directories replaced, the user's umask, and every failure to write one line (exit 5)."""

from __future__ import annotations

import errno
import os
import signal
import sqlite3
import stat
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from engine import __version__, output
from engine.errors import OutputError
from engine.output import output_lock
from engine.pipeline import check, write
from tests.fakes.server import LocalApi, Response
from tests.graphtools import read_output

TOKEN = "k3y-0f-the-output-tests"

MAPPING = """\
version: 1
integration: {id: acme, name: Acme}
config:
  token: {env: ACME_TOKEN, secret: true}
sources:
  api:
    base_url: http://unused.invalid
    headers: {X-Token: "{{ config.token }}"}
    retry: {max_attempts: 1}
steps:
  - id: fetch-groups
    name: Fetch Groups
    request: {path: /groups}
    entities:
      - type: acme_group
        class: Group
        key: "acme_group:{{ record.id }}"
        properties: {name: name}
  - id: fetch-members
    name: Fetch Members
    depends_on: [fetch-groups]
    request: {path: /members}
    entities:
      - type: acme_member
        class: User
        key: "acme_member:{{ record.id }}"
        properties: {name: name}
    relationships:
      - class: HAS
        from: {type: acme_group, key: "acme_group:{{ record.group }}"}
        to: acme_member
"""


class Api:
    """The fake API: groups and members, a version tag in every name (to tell runs apart), and
    an optional gate that holds the /members request until the test opens it."""

    def __init__(self, server: LocalApi):
        self.server = server
        self.version = "v1"
        self.gate: threading.Event | None = None
        self.waiting = threading.Event()
        server.route("GET", "/groups", lambda request: Response(200, [{"id": 1, "name": f"Admins {self.version}"}]))
        server.route("GET", "/members", self.members)

    def members(self, request) -> Response:
        if self.gate is not None:
            self.waiting.set()
            self.gate.wait(60)
        return Response(200, [{"id": 10, "name": f"Ann {self.version}", "group": 1}])

    @property
    def url(self) -> str:
        return self.server.url


@pytest.fixture
def api():
    with LocalApi() as server:
        yield Api(server)


@pytest.fixture
def mapping(tmp_path) -> Path:
    path = tmp_path / "acme.yaml"
    path.write_text(MAPPING)
    return path


def run(etl, mapping: Path, api: Api, out: Path):
    return etl("run", mapping, "--base-url", api.url, "--output", out, env={"ACME_TOKEN": TOKEN})


def command(mapping: Path, api: Api, out: Path, program: tuple[str, ...] = ("-m", "engine")) -> list[str]:
    return [sys.executable, *program, "run", str(mapping), "--base-url", api.url, "--output", str(out)]


def environment() -> dict[str, str]:
    return {**os.environ, "ACME_TOKEN": TOKEN}


def files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def hidden(parent: Path) -> list[str]:
    """What a run may leave beside its output: staging directories, backups, lock files."""
    return sorted(p.name for p in parent.iterdir() if p.name.startswith("."))


def one_line_error(result) -> str:
    assert result.exit_code == 5, result.stdout + result.stderr
    assert "Traceback" not in result.stderr and "internal error" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("etl: error: "), result.stderr
    return lines[0]


def member_names(out: Path) -> list[str]:
    return [e["name"] for e in read_output(out)["entities"] if e["_type"] == "acme_member"]


# -- one run at a time ---------------------------------------------------------------------------


def test_a_second_run_into_the_same_output_fails_at_once_naming_the_first(etl, api, mapping, tmp_path):
    out = tmp_path / "out"
    assert run(etl, mapping, api, out).exit_code == 0
    before = files(out)
    api.gate, api.version = threading.Event(), "v2"
    first = subprocess.Popen(
        command(mapping, api, out), cwd=tmp_path, env=environment(), stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    try:
        assert api.waiting.wait(60), "the first run never asked for /members"
        second = run(etl, mapping, api, out)
        message = one_line_error(second)
        assert f"{out} is locked (another etl command is using it: process {first.pid}" in message
        assert f"lock file {tmp_path / '.out.lock'}" in message
        assert files(out) == before  # the second run changed nothing
    finally:
        api.gate.set()
        stdout, stderr = first.communicate(timeout=60)
    assert first.returncode == 0, stderr
    assert member_names(out) == ["Ann v2"]
    assert hidden(tmp_path) == []  # no staging directory, backup or lock file left


def test_a_run_does_not_replace_an_output_a_sync_is_reading(etl, api, mapping, tmp_path):
    out = tmp_path / "out"
    assert run(etl, mapping, api, out).exit_code == 0
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_SHARED, str(out)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        message = one_line_error(run(etl, mapping, api, out))
        assert f"is locked (another etl command is using it: process {holder.pid}" in message
    finally:
        holder.stdin.close()
        holder.wait(timeout=60)
    api.version = "v2"
    assert run(etl, mapping, api, out).exit_code == 0  # once the reader is gone
    assert member_names(out) == ["Ann v2"]
    assert hidden(tmp_path) == []


HOLD_SHARED = """
import sys
from pathlib import Path
from engine import output
from engine.output import output_lock
with output_lock(Path(sys.argv[1]), shared=True):
    print("locked", flush=True)
    sys.stdin.read()
"""


# -- killed mid-swap -------------------------------------------------------------------------------

# The CLI, killed (SIGKILL: no cleanup of any kind) right after one of the swap's renames.
KILLED_AFTER_RENAME = """
import os, signal, sys
after = sys.argv.pop(1)  # "backup": after DIR -> .DIR.old-PID; "replace": after staging -> DIR
rename = os.rename
def killing_rename(source, destination):
    rename(source, destination)
    moved_to_backup = ".old-" in os.path.basename(os.fspath(destination))
    if moved_to_backup == (after == "backup"):
        os.kill(os.getpid(), signal.SIGKILL)
os.rename = killing_rename
from engine.cli import main
main()
"""


def no_space(path: Path, data: bytes) -> int:
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))


def killed_run(mapping: Path, api: Api, out: Path, after: str) -> None:
    done = subprocess.run(
        command(mapping, api, out, ("-c", KILLED_AFTER_RENAME, after)),
        cwd=out.parent,
        env=environment(),
        capture_output=True,
        timeout=120,
    )
    assert done.returncode == -signal.SIGKILL, done.stderr


def test_a_run_killed_between_the_renames_leaves_the_previous_output_to_the_next_run(etl, api, mapping, tmp_path):
    out = tmp_path / "out"
    assert run(etl, mapping, api, out).exit_code == 0
    before = files(out)
    api.version = "v2"
    killed_run(mapping, api, out, "backup")
    assert not out.exists()  # the moment the kill left: the previous output is in the backup
    left = hidden(tmp_path)
    assert any(name.startswith(".out.old-") for name in left), left
    assert any(name.startswith(".out.staging-") for name in left), left
    # The next run fails (its disk is full), and still puts the previous output back where it was.
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(Path, "write_bytes", no_space)
        failed = run(etl, mapping, api, out)
    assert "No space left on device" in one_line_error(failed)
    assert files(out) == before
    assert hidden(tmp_path) == []
    # And a run that succeeds replaces it, as usual.
    api.version = "v3"
    assert run(etl, mapping, api, out).exit_code == 0
    assert member_names(out) == ["Ann v3"]
    assert hidden(tmp_path) == []


def test_a_run_killed_after_the_swap_leaves_a_backup_the_next_run_removes(etl, api, mapping, tmp_path):
    out = tmp_path / "out"
    assert run(etl, mapping, api, out).exit_code == 0
    api.version = "v2"
    killed_run(mapping, api, out, "replace")
    assert member_names(out) == ["Ann v2"]  # the new output is in place
    assert any(name.startswith(".out.old-") for name in hidden(tmp_path))
    api.version = "v3"
    assert run(etl, mapping, api, out).exit_code == 0
    assert member_names(out) == ["Ann v3"]
    assert hidden(tmp_path) == []


def test_staging_directories_of_dead_processes_are_removed_and_live_ones_kept(etl, api, mapping, tmp_path):
    finished = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead = int(finished.stdout)
    live = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE)
    try:
        (tmp_path / f".out.staging-{dead}-0badc0de" / "graph").mkdir(parents=True)
        (tmp_path / f".out.staging-{live.pid}-0badc0de").mkdir()
        (tmp_path / ".out.staging-notours").mkdir()  # not a name etl makes: not etl's to remove
        assert run(etl, mapping, api, tmp_path / "out").exit_code == 0
        assert hidden(tmp_path) == [f".out.staging-{live.pid}-0badc0de", ".out.staging-notours"]
    finally:
        live.stdin.close()
        live.wait(timeout=60)


# -- only our own directories ------------------------------------------------------------------------


def test_every_output_carries_the_marker(etl, api, mapping, tmp_path):
    assert run(etl, mapping, api, tmp_path / "out").exit_code == 0
    marker = (tmp_path / "out" / ".etl-output").read_text()
    assert marker.startswith(f"etl {__version__}\n")


def test_an_empty_directory_is_accepted(etl, api, mapping, tmp_path):
    (tmp_path / "out").mkdir()
    assert run(etl, mapping, api, tmp_path / "out").exit_code == 0
    assert member_names(tmp_path / "out") == ["Ann v1"]


def test_a_summary_json_without_the_marker_is_refused(etl, api, mapping, tmp_path):
    old = tmp_path / "old"
    (old / "graph").mkdir(parents=True)
    (old / "summary.json").write_text('{"integrationStepResults": [], "metadata": {}}')
    before = files(old)
    message = one_line_error(run(etl, mapping, api, old))
    assert f"{old} has a summary.json but no .etl-output marker" in message
    assert "delete it (or move it away) and run again, or choose another --output" in message
    assert files(old) == before
    assert hidden(tmp_path) == []


def test_the_users_files_in_an_output_are_never_deleted(etl, api, mapping, tmp_path):
    out = tmp_path / "out"
    assert run(etl, mapping, api, out).exit_code == 0
    (out / "notes.txt").write_text("mine")
    before = files(out)
    message = one_line_error(run(etl, mapping, api, out))
    assert "also holds files etl did not write (notes.txt)" in message
    assert files(out) == before
    (out / "notes.txt").unlink()
    (out / "index.html").write_text("<html>a page etl visualize wrote</html>")
    assert run(etl, mapping, api, out).exit_code == 0  # etl's own page goes with the output
    assert not (out / "index.html").exists()


def test_files_put_into_the_output_during_a_run_stop_the_swap(etl, api, mapping, tmp_path):
    out = tmp_path / "out"
    assert run(etl, mapping, api, out).exit_code == 0
    api.gate, api.version = threading.Event(), "v2"
    running = subprocess.Popen(
        command(mapping, api, out), cwd=tmp_path, env=environment(), stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    try:
        assert api.waiting.wait(60)
        (out / "report.pdf").write_text("the user's, put there meanwhile")
    finally:
        api.gate.set()
        _, stderr = running.communicate(timeout=60)
    assert running.returncode == 5
    assert "also holds files etl did not write (report.pdf)" in stderr.decode()
    assert (out / "report.pdf").read_text() == "the user's, put there meanwhile"
    assert member_names(out) == ["Ann v1"]
    assert hidden(tmp_path) == []


# -- the umask ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(("umask", "directories", "files_mode"), [(0o022, 0o755, 0o644), (0o027, 0o750, 0o640)])
def test_the_output_keeps_the_users_umask(api, mapping, tmp_path, umask, directories, files_mode):
    out = tmp_path / "out"
    done = subprocess.run(
        command(mapping, api, out), cwd=tmp_path, env=environment(), capture_output=True, timeout=120, umask=umask
    )
    assert done.returncode == 0, done.stderr
    modes = {p: stat.S_IMODE(p.stat().st_mode) for p in [out, *out.rglob("*")]}
    assert {p: m for p, m in modes.items() if p.is_dir()} == {p: directories for p in modes if p.is_dir()}
    assert {p: m for p, m in modes.items() if p.is_file()} == {p: files_mode for p in modes if p.is_file()}


# -- failures are one line -----------------------------------------------------------------------------


def test_a_full_disk_is_one_line_and_changes_nothing(etl, api, mapping, tmp_path, monkeypatch):
    out = tmp_path / "out"
    assert run(etl, mapping, api, out).exit_code == 0
    before = files(out)
    real = Path.write_bytes

    def full_disk(path: Path, data: bytes) -> int:
        if "graph" in path.parts:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        return real(path, data)

    monkeypatch.setattr(Path, "write_bytes", full_disk)
    message = one_line_error(run(etl, mapping, api, out))
    assert f"cannot write the output directory {out}" in message
    assert "No space left on device (free some space, or choose another --output)" in message
    monkeypatch.undo()
    assert files(out) == before
    assert hidden(tmp_path) == []


def test_a_full_disk_under_the_key_index_is_one_line(etl, api, mapping, tmp_path, monkeypatch):
    monkeypatch.setattr(check, "SPILL_AT", 1)  # the index goes to disk at once, a key at a time
    monkeypatch.setattr(check, "GENERATION", 1)
    temporary_file = check.tempfile.TemporaryFile

    class FullDisk:
        def __init__(self, **options):
            self.file = temporary_file(**options)

        def write(self, data: bytes) -> int:
            if data != b"\n":  # the first line is written; then the disk is full
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            return self.file.write(data)

        def __getattr__(self, name):
            return getattr(self.file, name)

    monkeypatch.setattr(check.tempfile, "TemporaryFile", FullDisk)
    message = one_line_error(run(etl, mapping, api, tmp_path / "out"))
    assert "cannot write the key index of the run in" in message and "No space left on device" in message
    assert not (tmp_path / "out").exists()
    assert hidden(tmp_path) == []


def test_a_full_disk_under_the_indexed_keys_is_one_line(etl, api, mapping, tmp_path, monkeypatch):
    monkeypatch.setattr(check, "SPILL_AT", 1)
    monkeypatch.setattr(check, "GENERATION", 1)
    monkeypatch.setattr(check, "SEARCHES_BEFORE_INDEX", 0)  # indexed at the first lookup,
    monkeypatch.setattr(check, "_hash", lambda key: 0)  # which every key needs: they all collide
    connect = sqlite3.connect

    class FullDatabase:
        def __init__(self, *args, **options):
            self.db = connect(*args, **options)

        def execute(self, sql: str, *parameters):
            if sql.startswith("INSERT"):
                raise sqlite3.OperationalError("database or disk is full")
            return self.db.execute(sql, *parameters)

        def __getattr__(self, name):
            return getattr(self.db, name)

    monkeypatch.setattr(sqlite3, "connect", FullDatabase)
    message = one_line_error(run(etl, mapping, api, tmp_path / "out"))
    assert "cannot write the key index of the run in" in message and "database or disk is full" in message
    assert hidden(tmp_path) == []


def test_an_output_path_that_is_a_file_is_refused(etl, api, mapping, tmp_path):
    """The command line refuses it first (a usage error); a file that appears there once the
    run has started is refused when the output is staged, and again before the swap."""
    (tmp_path / "out").write_text("a file")
    result = run(etl, mapping, api, tmp_path / "out")
    assert result.exit_code == 2 and "is a file" in result.stderr and "Traceback" not in result.stderr
    with pytest.raises(OutputError) as refused:
        write.StagedOutput(tmp_path / "out")
    assert str(refused.value) == (
        f"{tmp_path / 'out'} exists and is a file, not a directory; refusing to replace it - choose another --output"
    )
    assert (tmp_path / "out").read_text() == "a file"
    assert hidden(tmp_path) == []


def test_an_output_path_under_a_file_is_one_line(etl, api, mapping, tmp_path):
    (tmp_path / "file").write_text("a file")
    message = one_line_error(run(etl, mapping, api, tmp_path / "file" / "out"))
    assert f"cannot write the output directory {tmp_path / 'file' / 'out'}" in message
    assert message.endswith(f"{tmp_path / 'file'} is a file, not a directory")


def test_an_unwritable_place_is_one_line_even_for_root(etl, api, mapping):
    """/sys refuses new files even to root (sysfs): an unwritable --output wherever tests run."""
    probe = Path("/sys/etl-output-probe")
    try:
        probe.mkdir()
    except OSError:
        pass
    else:
        probe.rmdir()
        pytest.skip("/sys is writable here")
    message = one_line_error(run(etl, mapping, api, Path("/sys/etl-output")))
    assert "cannot write the output directory /sys/etl-output" in message


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only directories")
def test_a_read_only_directory_is_one_line(etl, api, mapping, tmp_path):
    parent = tmp_path / "read-only"
    parent.mkdir()
    parent.chmod(0o555)
    try:
        message = one_line_error(run(etl, mapping, api, parent / "out"))
    finally:
        parent.chmod(0o755)
    assert "Permission denied (choose an --output you can write to)" in message
    assert list(parent.iterdir()) == []


def test_a_failing_rename_puts_the_previous_output_back(etl, api, mapping, tmp_path, monkeypatch):
    out = tmp_path / "out"
    assert run(etl, mapping, api, out).exit_code == 0
    before = files(out)
    rename = os.rename

    def failing_rename(source, destination):
        if ".staging-" in os.fspath(source):
            raise OSError(errno.EIO, os.strerror(errno.EIO), os.fspath(source))
        rename(source, destination)

    monkeypatch.setattr(write.os, "rename", failing_rename)
    message = one_line_error(run(etl, mapping, api, out))
    assert f"cannot replace the output directory {out}" in message and "Input/output error" in message
    monkeypatch.undo()
    assert files(out) == before
    assert hidden(tmp_path) == []
    assert run(etl, mapping, api, out).exit_code == 0  # nothing was left locked


# -- the lock file ----------------------------------------------------------------------------------


def test_the_last_holder_of_the_lock_removes_its_file(tmp_path):
    out, lock = tmp_path / "out", tmp_path / ".out.lock"
    with output_lock(out, shared=True):
        with output_lock(out, shared=True):
            assert lock.read_text().strip() == str(os.getpid())  # who holds it, for a message
        assert lock.exists()  # another reader still holds it
        with pytest.raises(OutputError, match=r"is locked \(a run is replacing it|another etl command"):
            with output_lock(out, shared=False):
                pass
    assert not lock.exists()
    with output_lock(out, shared=False):
        assert lock.exists()
    assert hidden(tmp_path) == []


def test_a_lock_file_removed_as_it_was_locked_is_not_trusted(tmp_path, monkeypatch):
    """Its last holder removes the lock file on the way out; a process that had opened that file
    and now locks it must lock the new one instead, or two could both think they hold it."""
    out, lock = tmp_path / "out", tmp_path / ".out.lock"
    real_flock, calls = output.fcntl.flock, []

    def flock(handle: int, operation: int) -> None:
        real_flock(handle, operation)
        calls.append(os.fstat(handle).st_ino)
        if len(calls) == 1:
            lock.unlink()  # as the previous holder does just before this one gets the lock

    monkeypatch.setattr(output.fcntl, "flock", flock)
    with output_lock(out, shared=False):
        assert lock.exists() and len(calls) == 2  # it let go of the removed file and locked the new one
        assert lock.stat().st_ino == calls[1]
    assert not lock.exists()
