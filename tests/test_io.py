"""vggnet.io: temporary files of atomic writes never outlive their writer unnoticed."""

import subprocess
import sys

from vggnet.io import _HOST, atomic_write, remove_stale_temporaries


def test_only_a_dead_writers_temporary_files_on_this_host_are_removed(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    alive = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        files = {
            "dead": tmp_path / f".out.npz.{_HOST}-{dead.pid}.a1b2.tmp",
            "alive": tmp_path / f".out.npz.{_HOST}-{alive.pid}.c3d4.tmp",
            "other host": tmp_path / f".out.npz.0badc0de-{dead.pid}.e5f6.tmp",
            "other file": tmp_path / f".out.npz.old.{_HOST}-{dead.pid}.a1b2.tmp",
            "not ours": tmp_path / ".out.npz.tmp",
        }
        for f in files.values():
            f.write_bytes(b"partial")
        assert remove_stale_temporaries(tmp_path / "out.npz") == [files["dead"]]
        assert sorted(p for p in tmp_path.iterdir()) == sorted(f for k, f in files.items() if k != "dead")
        atomic_write(tmp_path / "out.npz", lambda tmp: open(tmp, "wb").write(b"whole"))
        assert (tmp_path / "out.npz").read_bytes() == b"whole" and files["alive"].exists()
    finally:
        alive.kill()
        alive.wait()
