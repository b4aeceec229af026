"""The CLI as a user runs it: ``velocity serve`` and ``velocity fetch`` as subprocesses over
UDP on 127.0.0.1, with a private key cache per test."""

from __future__ import annotations

import asyncio
import hashlib
import json
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from harness.schemas import schema_errors
from tests.cli.processes import (
    VELOCITY,
    fetch,
    fetch_json,
    run_cli,
    server,
    started,
    target_of,
)
from velocity.cli.serve import serve
from velocity.easy import AsyncEasyClient, EasyClientConfig, Fetched


def test_discovery_then_cached_key_then_pdk(site: Path, env: dict[str, str],
                                           tmp_path: Path) -> None:
    with server(site, env, "--publish-kem") as target:
        for name in ("small.txt", "medium.bin", "large.bin"):
            out = tmp_path / f"got-{name}"
            first = fetch_json(target, env, f"/{name}", "-o", str(out))
            assert out.read_bytes() == (site / name).read_bytes()
            assert first["sha256"] == hashlib.sha256(out.read_bytes()).hexdigest()
        modes = [fetch_json(target, env, "/small.txt")["velocity"]["auth_mode"]  # type: ignore[index]
                 for _ in range(2)]
        assert modes == ["pdk", "pdk"]
        cache = list((tmp_path / "cache" / "keys").glob("*.json"))
        assert len(cache) == 1 and oct(cache[0].stat().st_mode)[-3:] == "600"


def test_first_fetch_discovers(site: Path, env: dict[str, str]) -> None:
    with server(site, env, "--publish-kem") as target:
        first = fetch_json(target, env, "/small.txt")["velocity"]
        second = fetch_json(target, env, "/small.txt")["velocity"]
    assert first["auth_mode"] == "discovery" and first["key_cached"]  # type: ignore[index]
    assert second["auth_mode"] == "pdk"  # type: ignore[index]


@pytest.mark.spec("VEL-RES-005", "VEL-RES-006")
def test_early_data_across_fetch_processes(site: Path, env: dict[str, str],
                                           tmp_path: Path) -> None:
    """A fetch with --early-data keeps its ticket; the next process resumes with it and sends
    the GET as 0-RTT (the ticket's age carried across processes on the wall clock)."""
    with server(site, env, "--publish-kem") as target:
        first = fetch_json(target, env, "/small.txt", "--early-data")["velocity"]
        tickets = list((tmp_path / "cache" / "tickets").glob("*.json"))
        assert len(tickets) == 1 and oct(tickets[0].stat().st_mode)[-3:] == "600"
        out = tmp_path / "early.bin"
        second = fetch_json(target, env, "/medium.bin", "--early-data", "-o", str(out))
        plain = fetch_json(target, env, "/small.txt")["velocity"]
    assert first["auth_mode"] == "discovery" and not first["early_data"]  # type: ignore[index]
    assert second["velocity"]["auth_mode"] == "resumption"  # type: ignore[index]
    assert second["velocity"]["early_data"]  # type: ignore[index]
    assert out.read_bytes() == (site / "medium.bin").read_bytes()
    assert plain["auth_mode"] == "pdk" and not plain["early_data"]  # type: ignore[index]


def test_serve_writes_a_valid_transcript_per_connection(site: Path, env: dict[str, str],
                                                       tmp_path: Path) -> None:
    out = tmp_path / "transcripts"
    with server(site, env, "--publish-kem", "--transcripts", str(out)) as target:
        for _ in range(2):
            fetch_json(target, env, "/small.txt")
    files = sorted(out.glob("*.json"))
    assert len(files) == 2
    modes = []
    for path in files:
        document = json.loads(path.read_text())
        assert schema_errors("transcript", document) == [], path
        assert document["vantage_point"] == "server" and document["target"] == target
        done = [e["data"] for e in document["events"]
                if e["name"] == "velocity:handshake_completed"]
        modes.append(done[0]["mode"])
    assert sorted(modes) == ["discovery", "pdk"]


def test_unpublished_key_must_be_supplied(site: Path, env: dict[str, str]) -> None:
    with server(site, env) as target:
        result = fetch(target, env, "/small.txt")
        assert result.returncode == 1
        assert "does not publish its ML-KEM key" in result.stderr
        assert "--kem-file" in result.stderr and "Traceback" not in result.stderr
        leaf = site / ".velocity" / "certs" / "balanced-leaf.pem"
        with_file = fetch_json(target, env, "/small.txt", "--kem-file", str(leaf))
        assert with_file["velocity"]["auth_mode"] == "pdk"  # type: ignore[index]


@pytest.mark.parametrize(("args", "message"), [
    (["nonsense", "/x"], "HOST:PORT"),
    (["127.0.0.1:1", "/x", "--kem-b64", "***"], "not valid base64"),
    (["127.0.0.1:1", "/x", "--kem-b64", "AAAA"], "not an ML-KEM"),
    (["127.0.0.1:1", "/x", "--tofu", "--insecure"], "choose one"),
    (["127.0.0.1:9", "/x", "--insecure", "--timeout", "1"], "no Velocity/1 handshake"),
])
def test_user_errors_are_one_line(env: dict[str, str], args: list[str], message: str) -> None:
    result = fetch(args[0], env, *args[1:])
    assert result.returncode != 0
    assert message in result.stderr, result.stderr
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_serve_errors_are_one_line(tmp_path: Path, env: dict[str, str]) -> None:
    missing = subprocess.run([*VELOCITY, "serve", "--root", str(tmp_path / "nope"),
                              "--self-signed"], capture_output=True, text=True, env=env,
                             timeout=30, check=False)
    assert missing.returncode == 1 and "cannot serve" in missing.stderr
    assert "Traceback" not in missing.stderr
    (tmp_path / "www").mkdir()
    no_key = subprocess.run([*VELOCITY, "serve", "--root", str(tmp_path / "www")],
                            capture_output=True, text=True, env=env, timeout=30, check=False)
    assert no_key.returncode == 1 and "--self-signed" in no_key.stderr


def test_bad_key_and_certificate_files_are_one_line(env: dict[str, str],
                                                    tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.key"
    garbage.write_text("not a key!\n")
    broken = tmp_path / "broken.pem"
    broken.write_text("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")
    for args, message in (
            (["fetch", "127.0.0.1:9", "/", "--kem-file", str(garbage)], "nor a base64 key"),
            (["fetch", "127.0.0.1:9", "/", "--kem-file", str(broken)],
             "not a Velocity leaf certificate"),
            (["fetch", "127.0.0.1:9", "/", "--ca", str(broken)], "cannot read CA certificates"),
            (["serve", "--root", str(tmp_path), "--cert", str(broken), "--key", str(garbage)],
             "--cert takes the leaf certificate")):
        result = subprocess.run([*VELOCITY, *args], capture_output=True, text=True, env=env,
                                timeout=30, check=False)
        assert result.returncode == 1 and message in result.stderr, (args, result.stderr)
        assert "Traceback" not in result.stderr and result.stderr.count("\n") == 1


def test_port_in_use(site: Path, env: dict[str, str]) -> None:
    with server(site, env) as target:
        busy = subprocess.run([*VELOCITY, "serve", "--root", str(site), "--self-signed",
                               "--listen", target], capture_output=True, text=True, env=env,
                              timeout=30, check=False)
    assert busy.returncode == 1 and "Traceback" not in busy.stderr
    assert "in use" in busy.stderr.lower() or "address" in busy.stderr.lower()


def test_traversal_gets_404(site: Path, env: dict[str, str]) -> None:
    with server(site, env, "--publish-kem") as target:
        for path in ("/../etc/passwd", "/.velocity/certs/balanced-kem.key", "/%2e%2e/x"):
            result = fetch(target, env, path, "--json")
            assert result.returncode == 1, path
            assert json.loads(result.stdout)["status"] in (400, 404)


def test_probe_velocity_and_fallback(site: Path, env: dict[str, str]) -> None:
    with server(site, env, "--publish-kem") as target:
        result = subprocess.run([*VELOCITY, "probe", target, "--json"], capture_output=True,
                                text=True, env=env, timeout=60, check=False)
        assert result.returncode == 0, result.stderr
        report = json.loads(result.stdout)
        assert report["outcome"] == "velocity" and report["key_published"]
        assert report["profile"] == "balanced" and report["bytes_received"] > 0
        first, answer = report["flights"][:2]
        assert (first["direction"], first["spaces"]) == ("sent", ["initial"])
        assert answer["direction"] == "received" and "initial" in answer["spaces"]
        sent = sum(f["bytes"] for f in report["flights"] if f["direction"] == "sent")
        received = sum(f["bytes"] for f in report["flights"] if f["direction"] == "received")
        assert sent == report["bytes_sent"]  # every datagram sent is in the flights
        assert 0 < received <= report["bytes_received"]  # a late one may arrive while closing
        assert 0 < report["handshake_ms"] <= report["elapsed_ms"]
    with server(site, env, "--fallback-only", "--fallback-host", "h3.example") as target:
        result = subprocess.run([*VELOCITY, "probe", target], capture_output=True, text=True,
                                env=env, timeout=60, check=False)
        assert result.returncode == 10, result.stdout + result.stderr
        assert "FALLBACK to h3 at h3.example:443" in result.stdout
        denied = fetch(target, env, "/small.txt")
        assert denied.returncode == 1 and "h3 at h3.example:443" in denied.stderr
    dead = subprocess.run([*VELOCITY, "probe", "127.0.0.1:9", "--timeout", "1"],
                          capture_output=True, text=True, env=env, timeout=60, check=False)
    assert dead.returncode == 1 and "no Velocity/1 handshake" in dead.stdout


def probe_json(target: str, env: dict[str, str], *args: str) -> tuple[int, dict[str, Any]]:
    result = subprocess.run([*VELOCITY, "probe", target, "--json", *args], capture_output=True,
                            text=True, env=env, timeout=60, check=False)
    return result.returncode, json.loads(result.stdout)


@pytest.mark.spec("VEL-HS-040")
def test_serve_alpn_list_decides_what_is_negotiated(site: Path, env: dict[str, str]) -> None:
    with server(site, env, "--publish-kem", "--alpn", "velocity/1-exp,velocity/1") as target:
        code, both = probe_json(target, env, "--alpn", "velocity/1,velocity/1-exp")
        assert code == 0 and both["alpn"] == "velocity/1-exp"  # the server's preference
        code, plain = probe_json(target, env, "--alpn", "velocity/1,h3")
        assert code == 0 and plain["alpn"] == "velocity/1"
    with server(site, env, "--publish-kem", "--alpn", "velocity/1-exp") as target:
        code, other = probe_json(target, env, "--alpn", "velocity/1,h3")
        assert code == 10 and other["fallback"]["reason"] == 0
    bad = subprocess.run([*VELOCITY, "serve", "--root", str(site), "--self-signed",
                          "--alpn", "velocity/1,,h3"], capture_output=True, text=True,
                         env=env, timeout=60, check=False)
    assert bad.returncode == 2 and "--alpn" in bad.stderr and "Traceback" not in bad.stderr


def test_handshake_demo_passes_locally(env: dict[str, str]) -> None:
    result = subprocess.run([*VELOCITY, "handshake-demo"], capture_output=True, text=True,
                            env=env, timeout=120, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("ok ") == 3


def test_metrics_endpoint_scrapes(site: Path, env: dict[str, str]) -> None:
    with started(["serve", "--root", str(site), "--self-signed", "--publish-kem", "--listen",
                  "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0"], env) as stderr:
        metrics_line = stderr.wait_for("metrics on ")
        target = target_of(stderr.wait_for("serving "))
        for _ in range(2):
            assert fetch(target, env, "/small.txt", "--json").returncode == 0
        url = metrics_line.split("metrics on ", 1)[1].strip()
        with urllib.request.urlopen(url, timeout=10) as reply:
            text = reply.read().decode()
    for mode in ("discovery", "pdk"):
        assert (f'velocity_handshakes_total{{auth_mode="{mode}",outcome="completed",'
                'profile="balanced"} 1.0') in text
    assert 'velocity_kem_operation_seconds_count{operation="decapsulate"' in text
    assert "velocity_datagrams_total" in text and "velocity_handshake_duration_seconds" in text


@pytest.mark.spec("VEL-CERT-005", "VEL-AUTH-011")
def test_key_rotation_overlap_then_stale_key_rediscovery(site: Path, env: dict[str, str]) -> None:
    def keys(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*VELOCITY, "keys", *args, "--root", str(site)],
                              capture_output=True, text=True, env=env, timeout=60, check=True)

    with server(site, env, "--publish-kem") as target:
        ca = str(site / ".velocity" / "certs" / "balanced-ca.pem")
        first = fetch_json(target, env, "/small.txt", "--ca", ca)["velocity"]
        fetch_json(target, env, "/small.txt", "--tofu", "--no-discover")  # cached key: PDK
    assert first["auth_mode"] == "discovery"  # type: ignore[index]
    original = json.loads(keys("show", "--json").stdout)
    assert original["key_id"] == first["key_id"]  # type: ignore[index]

    keys("rotate")  # the previous key stays accepted through the overlap
    port = target.rsplit(":", 1)[1]
    with server(site, env, "--publish-kem", "--listen", f"127.0.0.1:{port}") as again:
        assert again == target
        during = fetch_json(target, env, "/small.txt", "--ca", ca)["velocity"]
        shown = json.loads(keys("show", "--json").stdout)
    assert during["auth_mode"] == "pdk"  # type: ignore[index]
    assert during["key_id"] == original["key_id"]  # type: ignore[index]
    assert shown["previous_key_id"] == original["key_id"] != shown["key_id"]

    keys("rotate", "--no-overlap")  # now the cached key is unknown to the server
    with server(site, env, "--publish-kem", "--listen", f"127.0.0.1:{port}"):
        after = fetch_json(target, env, "/small.txt", "--ca", ca)["velocity"]
        newest = json.loads(keys("show", "--json").stdout)
    assert after["auth_mode"] == "discovery"  # type: ignore[index]
    assert after["key_id"] == newest["key_id"] and newest["previous_key_id"] is None  # type: ignore[index]


@pytest.mark.spec("VEL-FB-005", "VEL-FB-006")
def test_fetch_follows_fallback_to_embedded_h3_origin(site: Path, env: dict[str, str]) -> None:
    with server(site, env, "--fallback-only", "--h3-listen", "127.0.0.1:0") as target:
        told = fetch(target, env, "/medium.bin")
        assert told.returncode == 1 and "add --follow-fallback" in told.stderr
        unverified = fetch(target, env, "/medium.bin", "--follow-fallback")
        assert unverified.returncode == 1
        assert "self-signed certificate (use --insecure" in unverified.stderr
        followed = fetch_json(target, env, "/medium.bin", "--follow-fallback", "--insecure")
        assert followed["status"] == 200 and followed["fallback"]["alpn"] == "h3"  # type: ignore[index]
        digest = hashlib.sha256((site / "medium.bin").read_bytes()).hexdigest()
        assert followed["sha256"] == digest and "velocity" not in followed
    with server(site, env, "--fallback-only", "--fallback-host", "h3.example") as target:
        elsewhere = fetch(target, env, "/small.txt", "--follow-fallback", "--insecure")
        assert elsewhere.returncode == 1
        assert "not following an unauthenticated directive to another host" in elsewhere.stderr
    with server(site, env, "--fallback-only", "--fallback-alpn", "spdy/3") as target:
        unasked = fetch(target, env, "/small.txt", "--follow-fallback", "--insecure")
        assert unasked.returncode == 1 and "cannot follow a directive to spdy/3" in unasked.stderr


def test_hundred_concurrent_fetches(site: Path, env: dict[str, str], tmp_path: Path) -> None:
    """20 clients with 5 requests in flight each against ``velocity serve``: every body
    arrives whole and each client used one connection."""
    with server(site, env, "--publish-kem") as target:
        config = EasyClientConfig(target, insecure=True, key_cache_dir=tmp_path / "easy")

        async def one_client(index: int) -> list[Fetched]:
            async with AsyncEasyClient(config) as client:
                names = [("small.txt", "medium.bin", "large.bin")[(index + i) % 3]
                         for i in range(5)]
                return list(await asyncio.gather(*(client.fetch(f"/{n}") for n in names)))

        async def everyone() -> list[list[Fetched]]:
            return list(await asyncio.gather(*(one_client(i) for i in range(20))))

        results = asyncio.run(everyone())
    fetched = [got for per_client in results for got in per_client]
    assert len(fetched) == 100 and all(got.status == 200 for got in fetched)
    wanted = {(site / n).read_bytes() for n in ("small.txt", "medium.bin", "large.bin")}
    assert all(got.body in wanted for got in fetched)
    assert all(len({id(got.handshake) for got in per_client}) == 1 for per_client in results)


@pytest.mark.spec("VEL-CERT-003")
def test_an_insecure_fetch_says_so_in_every_output(site: Path, env: dict[str, str],
                                                   tmp_path: Path) -> None:
    body = tmp_path / "body"
    with server(site, env, "--publish-kem") as target:
        plain = fetch(target, env, "/small.txt", "--insecure", "-o", str(body))
        assert plain.returncode == 0 and body.read_bytes() == (site / "small.txt").read_bytes()
        assert "--insecure: the server's certificate was not validated" in plain.stderr
        shown = fetch_json(target, env, "/small.txt", "--insecure")["velocity"]
        assert shown["trust"] == "insecure"  # type: ignore[index]
        ca = site / ".velocity" / "certs" / "balanced-ca.pem"
        verified = fetch(target, env, "/small.txt", "--ca", str(ca), "-o", str(body))
        assert verified.returncode == 0 and "not validated" not in verified.stderr


def test_structured_logs_from_velocity_log(site: Path, env: dict[str, str]) -> None:
    with started(["serve", "--root", str(site), "--self-signed", "--publish-kem", "--listen",
                  "127.0.0.1:0", "--log-format", "json"],
                 {**env, "VELOCITY_LOG": "warning,velocity.aio.server=info"}) as stderr:
        target = target_of(stderr.wait_for("serving "))
        assert fetch(target, env, "/small.txt", "--insecure", "--json").returncode == 0
        stderr.process.terminate()
        records = [json.loads(line) for line in stderr.rest()]
    done = next(r for r in records if r["msg"] == "handshake completed")
    assert done["level"] == "info" and done["logger"] == "velocity.aio.server"
    assert done["mode"] == "discovery" and done["profile"] == "balanced" and done["ms"] > 0
    assert any(r["msg"] == "connection closed" and r["error"] == "0x0" for r in records)
    bad = subprocess.run([*VELOCITY, "probe", target], capture_output=True, text=True,
                         env={**env, "VELOCITY_LOG": "loud"}, timeout=60, check=False)
    assert bad.returncode == 2 and "VELOCITY_LOG item 'loud'" in bad.stderr
    assert "Traceback" not in bad.stderr


def test_json_api_demo_local_and_against_a_server(site: Path, env: dict[str, str]) -> None:
    local = subprocess.run([*VELOCITY, "json-api-demo"], capture_output=True, text=True,
                           env=env, timeout=60, check=False)
    assert local.returncode == 0, local.stderr
    assert "GET /api/status -> 200" in local.stdout and '"auth_mode": "pdk"' in local.stdout
    assert "POST /api/echo -> 200" in local.stdout and "GET /api/time -> 200" in local.stdout
    with server(site, env, "--publish-kem", "--api") as target:
        remote = subprocess.run([*VELOCITY, "json-api-demo", "--target", target, "--insecure"],
                                capture_output=True, text=True, env=env, timeout=60,
                                check=False)
        assert remote.returncode == 0, remote.stderr
        assert '"auth_mode": "discovery"' in remote.stdout
    with server(site, env, "--publish-kem") as target:  # no --api: the calls get 404
        missing = subprocess.run([*VELOCITY, "json-api-demo", "--target", target,
                                  "--insecure"], capture_output=True, text=True, env=env,
                                 timeout=60, check=False)
        assert missing.returncode == 1 and "GET /api/status -> 404" in missing.stdout


@pytest.mark.spec("VEL-GEN-002")
def test_default_ports(site: Path, env: dict[str, str]) -> None:
    """With no --listen the server is on the lab default 4433 (the option's default: binding
    it here would fail whenever something else holds it), and its directives name 443 when no
    --fallback-port or --h3-listen says otherwise."""
    listen = next(p for p in serve.params if p.name == "listen")
    assert listen.default == "127.0.0.1:4433"
    with server(site, env, "--fallback-only") as target:
        result = run_cli(env, "probe", target)
    assert result.returncode == 10, result.stdout + result.stderr
    assert "FALLBACK to h3 at 127.0.0.1:443 " in result.stdout


def test_a_server_that_prints_no_banner_fails_the_wait(tmp_path: Path,
                                                        env: dict[str, str]) -> None:
    """The banner wait is bounded and shows what the server said instead."""
    with (pytest.raises(pytest.fail.Exception, match=r"(?s)exited with 1.*cannot serve"),
          server(tmp_path / "missing", env)):
        pass
    quiet = ["-c", "import sys, time; print('starting', file=sys.stderr, flush=True); "
             "time.sleep(60)"]
    with (started(quiet, env, program=(sys.executable,)) as stderr,
          pytest.raises(pytest.fail.Exception, match=r"(?s)no 'serving ' within 1 s.*starting")):
        stderr.wait_for("serving ", within=1)
