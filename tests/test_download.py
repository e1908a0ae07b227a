"""The download module against a real HTTP server on 127.0.0.1: full, cut and resumed, refused, offline, mirrored."""

import hashlib
import os
import socket
import sys
import time

import pytest

from vggnet.download import DownloadError, HashMismatch, check_hashes, fetch, file_hashes

DATA = os.urandom(300_000)
SHA = hashlib.sha256(DATA).hexdigest()

# Every socket this process creates or resolves while WATCH is set (an audit hook cannot be removed, so it
# stays installed and idle outside the offline tests).
WATCH, OPENED = [False], []


def _audit(event: str, args: tuple) -> None:
    if WATCH[0] and event in ("socket.__new__", "socket.connect", "socket.getaddrinfo"):
        OPENED.append(event)


sys.addaudithook(_audit)


def leftovers(folder):
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def one_line(e: Exception) -> str:
    text = str(e)
    assert "\n" not in text
    return text


def test_a_full_download_is_checked_then_renamed(isolated_cache, file_server):
    url = file_server.add("w.bin", DATA)
    dest = isolated_cache / "weights" / "downloads" / "w.bin"
    assert fetch([url], dest, {"sha256": SHA}, what="w", progress=False) == SHA
    assert dest.read_bytes() == DATA and leftovers(dest.parent) == ["w.bin"]
    assert file_server.gets("w.bin") == [None]
    assert fetch([url], dest, {"sha256": SHA}, what="w", progress=False) == SHA  # already there: checked, not fetched
    assert file_server.gets("w.bin") == [None]


def test_a_cut_download_resumes_with_a_range_request(isolated_cache, file_server):
    url = file_server.add("w.bin", DATA, cut_after=100_000)
    dest = isolated_cache / "w.bin"
    assert fetch([url], dest, {"sha256_prefix": SHA[:8]}, what="w", progress=False) == SHA
    assert dest.read_bytes() == DATA
    assert file_server.gets("w.bin") == [None, "bytes=100000-"]  # the second request asks only for the rest


def test_a_part_left_by_a_killed_process_is_resumed(isolated_cache, file_server):
    url = file_server.add("w.bin", DATA)
    dest = isolated_cache / "w.bin"
    dest.parent.mkdir(parents=True)
    dest.with_name("w.bin.part").write_bytes(DATA[:1234])
    fetch([url], dest, {"sha256": SHA}, what="w", progress=False)
    assert dest.read_bytes() == DATA and file_server.gets("w.bin") == ["bytes=1234-"]


def test_a_complete_part_is_not_fetched_again(isolated_cache, file_server):
    url = file_server.add("w.bin", DATA)
    dest = isolated_cache / "w.bin"
    dest.parent.mkdir(parents=True)
    dest.with_name("w.bin.part").write_bytes(DATA)
    fetch([url], dest, {"sha256": SHA}, what="w", progress=False)
    assert dest.read_bytes() == DATA and file_server.gets("w.bin") == [f"bytes={len(DATA)}-"]  # answered 416


@pytest.mark.parametrize("part", [None, b"x" * 1000], ids=["fresh", "resumed onto foreign bytes"])
def test_a_wrong_hash_is_refused_and_nothing_is_left(isolated_cache, file_server, part):
    url = file_server.add("w.bin", DATA)
    dest = isolated_cache / "w.bin"
    dest.parent.mkdir(parents=True)
    if part:
        dest.with_name("w.bin.part").write_bytes(part)
    with pytest.raises(HashMismatch) as caught:
        fetch([url], dest, {"sha256": "0" * 64}, what="w", progress=False)
    assert one_line(caught.value).startswith(f"{url}: refused, nothing kept") and "expected sha256 0000" in str(
        caught.value
    )
    assert leftovers(dest.parent) == []


def test_publisher_size_md5_and_first_mib_md5_are_all_checked(isolated_cache, file_server):
    data = os.urandom((1 << 20) + 5000)  # fastai's md5_first_mib covers only the first MiB
    hashes = {
        "md5": hashlib.md5(data).hexdigest(),
        "size_bytes": len(data),
        "md5_first_mib": hashlib.md5(data[: 1 << 20]).hexdigest(),
    }
    url = file_server.add("d.tgz", data)
    fetch([url], isolated_cache / "d.tgz", hashes, what="d", progress=False)
    assert file_hashes(isolated_cache / "d.tgz") == {**hashes, "sha256": hashlib.sha256(data).hexdigest()}
    with pytest.raises(HashMismatch, match=f"expected {len(data) + 1} bytes, found {len(data)} bytes"):
        check_hashes(isolated_cache / "d.tgz", {**hashes, "size_bytes": len(data) + 1}, "d")
    with pytest.raises(HashMismatch, match="expected md5_first_mib"):
        check_hashes(isolated_cache / "d.tgz", {"md5_first_mib": hashlib.md5(data).hexdigest()}, "d")


def test_a_hash_the_server_states_is_checked_where_none_is_published(isolated_cache, file_server):
    good = file_server.add("good.bin", DATA, headers={"X-Linked-Etag": f'"{SHA}"'})
    bad = file_server.add("bad.bin", DATA, headers={"X-Linked-Etag": f'"{"1" * 64}"'})
    assert fetch([good], isolated_cache / "good.bin", {}, what="good", progress=False) == SHA
    with pytest.raises(HashMismatch, match="expected sha256 1111"):
        fetch([bad], isolated_cache / "bad.bin", {}, what="bad", progress=False)
    assert leftovers(isolated_cache) == ["good.bin"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("failure", ["404", "refused", "stalled"])
def test_each_failure_is_one_line_that_says_where_to_put_the_file(isolated_cache, file_server, monkeypatch, failure):
    monkeypatch.setenv("VGGNET_TIMEOUT", "0.5")
    url = {
        "404": file_server.url("missing.bin"),
        "refused": f"http://127.0.0.1:{free_port()}/w.bin",
        "stalled": file_server.add("slow.bin", DATA, stall=True),
    }[failure]
    dest = isolated_cache / "weights" / "downloads" / "w.bin"
    start = time.perf_counter()
    with pytest.raises(DownloadError) as caught:
        fetch([url], dest, {"sha256": SHA}, what="vgg-test", progress=False)
    message = one_line(caught.value)
    assert message.startswith(f"cannot get vgg-test: {url} (")
    assert message.endswith(f"; put the file from {url} (sha256 {SHA}) at {dest}")
    reason = {"404": "HTTP 404 Not Found", "refused": "Connection refused", "stalled": "no answer for 0.5 s"}[failure]
    assert reason in message
    assert time.perf_counter() - start < 4  # a stalled server costs the timeout, not the server's whole stall
    assert not dest.exists()


@pytest.mark.parametrize("switch", ["VGGNET_OFFLINE", "HF_HUB_OFFLINE"])
def test_offline_opens_no_socket(isolated_cache, file_server, monkeypatch, switch):
    url = file_server.add("w.bin", DATA)
    dest = isolated_cache / "w.bin"
    monkeypatch.setenv(switch, "1")
    OPENED.clear()
    WATCH[0] = True
    try:
        with pytest.raises(DownloadError) as caught:
            fetch([url], dest, {"sha256": SHA}, what="w", progress=False)
    finally:
        WATCH[0] = False
    assert OPENED == [] and file_server.requests == []
    assert "offline (VGGNET_OFFLINE or HF_HUB_OFFLINE) and not cached; put the file from" in one_line(caught.value)
    assert dest.parent.is_dir()  # made for the file the message asks for
    dest.write_bytes(DATA)  # put there by hand, as the message says: used offline
    assert fetch([url], dest, {"sha256": SHA}, what="w", progress=False) == SHA


def test_the_audit_hook_does_see_a_download(isolated_cache):
    """The positive control of the test above: an online attempt opens a socket, and the hook records it."""
    OPENED.clear()
    WATCH[0] = True
    try:
        with pytest.raises(DownloadError):
            fetch([f"http://127.0.0.1:{free_port()}/x"], isolated_cache / "x", {}, what="x", progress=False)
    finally:
        WATCH[0] = False
    assert "socket.__new__" in OPENED


def test_file_urls_work_offline(isolated_cache, tmp_path, monkeypatch):
    src = tmp_path / "w.bin"
    src.write_bytes(DATA)
    monkeypatch.setenv("VGGNET_OFFLINE", "1")
    assert fetch([src.as_uri()], isolated_cache / "w.bin", {"sha256": SHA}, what="w", progress=False) == SHA


def test_a_mirror_replaces_the_publishers(isolated_cache, file_server, monkeypatch):
    file_server.add("site/w.bin", DATA)
    monkeypatch.setenv("VGGNET_MIRROR", file_server.url("site") + "/")
    publisher = f"http://127.0.0.1:{free_port()}/models/w.bin"  # nothing listens there
    fetch([publisher], isolated_cache / "w.bin", {"sha256": SHA}, what="w", progress=False)
    assert [p for _, p, _ in file_server.requests] == ["/site/w.bin"]
    with pytest.raises(DownloadError, match=r"put the file from http://127\.0\.0\.1:\d+/site/other\.bin"):
        fetch([publisher], isolated_cache / "other.bin", {"sha256": SHA}, what="o", progress=False)


def test_the_progress_bar_shows_bytes_rate_and_time_left(isolated_cache, file_server, capsys):
    url = file_server.add("w.bin", DATA, delay=0.01)
    fetch([url], isolated_cache / "w.bin", {"sha256": SHA}, what="w", progress=True)
    bar = capsys.readouterr().err
    assert "w.bin:" in bar and "293k" in bar and "B/s" in bar and "<" in bar  # 293k of 293k, rate, elapsed<left
