"""Hostile or mistaken Ray addresses (core/jobs/backends.py): a port that is not Ray
fails in seconds, a malformed address in one short line before Ray is asked, the
page shows such messages as plain text, and a local Ray listens on 127.0.0.1 only.
"""
from __future__ import annotations

import ipaddress
import os
import re
import shutil
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest

from core.jobs.backends import RunnerError, check_reachable, make_backend, parse_address

ROOT = Path(__file__).resolve().parents[1]
EVIL = "![x](http://evil.example/p.png)"


@pytest.fixture
def fake_server():
    """start(reply) -> "127.0.0.1:PORT" of a TCP server that is not Ray: each
    connection gets `reply` (None: nothing, held open; "close": closed at once)."""
    servers = []

    def start(reply):
        srv = socket.create_server(("127.0.0.1", 0))
        servers.append(srv)

        def serve():
            held = []
            while True:
                try:
                    conn, _ = srv.accept()
                except OSError:              # the fixture closed it
                    break
                if reply == "close":
                    conn.close()
                    continue
                if reply:
                    conn.sendall(reply)
                held.append(conn)
            for conn in held:
                conn.close()

        threading.Thread(target=serve, daemon=True).start()
        return f"127.0.0.1:{srv.getsockname()[1]}"

    yield start
    for srv in servers:
        srv.close()


@pytest.mark.parametrize("reply", [None, "close", b"SSH-2.0-OpenSSH_9.6\r\n",
                                   b"HTTP/1.1 400 Bad Request\r\n\r\n", b"\x00\x00"],
                         ids=["silent", "closes", "ssh", "http1", "two-bytes"])
def test_a_port_that_is_not_ray_fails_in_seconds_in_one_line(fake_server, reply):
    address = fake_server(reply)
    start = time.monotonic()
    with pytest.raises(RunnerError) as info:
        check_reachable(address)
    assert time.monotonic() - start < 5
    message = str(info.value)
    assert message.startswith(f"Ray address {address}: something listens there but it "
                              "is not Ray")
    assert "ray start --head" in message and "\n" not in message


def test_a_100k_character_host_is_refused_in_one_short_line():
    address = "h" * 100_000 + ":6379"
    for call in (lambda: check_reachable(address),
                 lambda: make_backend("ray", address=address)):   # before Ray is imported
        with pytest.raises(RunnerError, match="HOST:PORT") as info:
            call()
        message = str(info.value)
        assert len(message) < 300 and "100005 characters" in message and "\n" not in message


@pytest.mark.parametrize("address", ["head:0", "head:65536", "head:99999999", "head:",
                                     "head:²", "head:-1", "head:6379x", ":6379", "a b:6379",
                                     "a\nb:6379", "-head:6379", "ray://:6379",
                                     f"{EVIL}:6379", "h" * 254 + ":6379"])
def test_a_malformed_address_is_refused_in_one_line(address):
    with pytest.raises(RunnerError, match="HOST:PORT") as info:
        make_backend("ray", address=address)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("address,host,port", [
    ("10.0.0.5:6379", "10.0.0.5", 6379),
    ("head-1.example.com:1", "head-1.example.com", 1),
    ("ray://10.0.0.5:10001", "10.0.0.5", 10001),
    ("[::1]:65535", "::1", 65535),
    ("h" * 253 + ":6379", "h" * 253, 6379),
])
def test_a_well_formed_address_parses(address, host, port):
    assert parse_address(address) == (host, port)


def test_an_address_that_is_not_host_port_is_refused_on_the_page():
    pytest.importorskip("ray")          # without Ray the page says that first
    from streamlit.testing.v1 import AppTest

    from ui.text import plain
    at = AppTest.from_file(str(ROOT / "views" / "compare.py"), default_timeout=60).run()
    at.sidebar.number_input(key="cmp_seeds").set_value(2).run()
    at.sidebar.radio(key="cmp_backend").set_value("Ray cluster").run()
    at.sidebar.text_input(key="cmp_ray_address").set_value(f"{EVIL}:6379").run()
    assert not at.exception
    (error,) = [e.value for e in at.error if "Ray address" in e.value]
    assert error == plain(error_of(f"{EVIL}:6379")) and "![x](" not in error
    assert at.button(key="cmp_seeds_start").disabled


def error_of(address: str) -> str:
    with pytest.raises(RunnerError) as info:
        parse_address(address)
    return str(info.value)


def test_a_failed_jobs_message_is_plain_text_on_the_page(monkeypatch):
    """The address reaches the job through auto ($RAY_ADDRESS); the message that
    quotes it is shown as its text, for every session that opens the job."""
    ray = pytest.importorskip("ray")
    from streamlit.testing.v1 import AppTest

    from ui.seeds_view import registry
    monkeypatch.chdir(ROOT)
    monkeypatch.setattr(ray, "is_initialized", lambda: False)   # the module's Ray may run
    monkeypatch.setenv("RAY_ADDRESS", f"{EVIL}:6379")
    registry().clear()
    try:
        at = AppTest.from_file(str(ROOT / "views" / "compare.py"), default_timeout=60).run()
        at.sidebar.number_input(key="cmp_steps").set_value(5)
        at.sidebar.number_input(key="cmp_seeds").set_value(2).run()
        at.sidebar.radio(key="cmp_backend").set_value("Ray cluster").run()
        at.sidebar.text_input(key="cmp_ray_address").set_value("auto").run()
        at.button(key="cmp_seeds_start").click().run()
        (job,) = registry().runs()
        end = time.monotonic() + 30
        while job.thread_alive and time.monotonic() < end:
            time.sleep(0.1)
        assert job.status.state == "failed" and EVIL in job.status.message
        at.run()
        assert not at.exception
        shown = [e.value for e in at.error if "Ray address" in e.value]
        assert shown and all("![x](" not in text for text in shown)
        assert "\\!\\[x\\]\\(http\\:\u2060//evil.example/p.png\\)" in shown[0]
    finally:
        registry().clear()


# -- a real local Ray ---------------------------------------------------------------------
def _descendants(pid: int) -> set[int]:
    """pid and every process under it (Ray's GCS, raylet, agents and workers)."""
    parent = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            parent[int(stat.parent.name)] = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue                    # a process that ended meanwhile
    found, grew = {pid}, True
    while grew:
        more = {p for p, pp in parent.items() if pp in found} - found
        found |= more
        grew = bool(more)
    return found


def _listening(pids: set[int]) -> list[str]:
    """The local addresses these processes listen on (TCP), from `ss -ltnpH`."""
    out = subprocess.run(["ss", "-ltnpH"], capture_output=True, text=True,
                         check=True).stdout
    return [line.split()[3] for line in out.splitlines()
            if {int(p) for p in re.findall(r"pid=(\d+)", line)} & pids]


def _loopback(local: str) -> bool:
    host = local.rsplit(":", 1)[0].strip("[]").removeprefix("::ffff:")
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False                    # "*", "0.0.0.0" spelled otherwise


def test_a_local_ray_listens_on_127_0_0_1_and_passes_the_check():
    ray = pytest.importorskip("ray")
    if ray.is_initialized():
        pytest.skip("a Ray instance already runs in this process")
    backend = make_backend("ray", workers=2)
    try:
        gcs = ray.get_runtime_context().gcs_address
        assert gcs.startswith("127.0.0.1:")
        assert {n["NodeManagerAddress"] for n in ray.nodes()} == {"127.0.0.1"}
        check_reachable(gcs)            # a real Ray's GCS answers the HTTP/2 preface
        if shutil.which("ss") and Path("/proc/self/stat").exists():
            listening = _listening(_descendants(os.getpid()))
            assert listening and all(_loopback(a) for a in listening), listening
    finally:
        backend.close()
