"""The deploy files: fly.toml, k8s/deployment.yaml, compose.yaml, the Dockerfile, the systemd unit
and the Caddyfile, checked for the invariants a working connector depends on; then the image's and
the unit's start commands run for real.

The run tests (root only; there is no Docker engine or service manager to run them in) perform
the Dockerfile's install steps in one fresh venv shared by both, then start the server the way
the image and the unit start it: as an unprivileged user, in a private mount namespace in which
everything is read-only except the data directory. Each must answer /health, hand out a token
through the fixed client's OAuth flow (what a pasted-credentials Claude.ai connector does), keep
that state in a private directory, and exit cleanly within the kill timeout on SIGTERM.
"""

from __future__ import annotations

import base64
import hashlib
import http.client
import json
import os
import re
import secrets
import shlex
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest
import yaml

import rc_mcp

ROOT = Path(__file__).resolve().parent
CALLBACK = "https://claude.ai/api/mcp/auth_callback"
KILL_TIMEOUT = 10  # seconds every deploy gives rc_mcp between SIGTERM and SIGKILL
IMAGE_UID = 10001


def fly() -> dict:
    return tomllib.loads((ROOT / "fly.toml").read_text())


def manifest() -> dict[str, dict]:
    docs = [d for d in yaml.safe_load_all((ROOT / "k8s" / "deployment.yaml").read_text()) if d]
    return {d["kind"]: d for d in docs}


def compose_service() -> dict:
    return yaml.safe_load((ROOT / "compose.yaml").read_text())["services"]["rc_mcp"]


def dockerfile() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    text = re.sub(
        r"\\\n",
        " ",
        "\n".join(line for line in (ROOT / "Dockerfile").read_text().splitlines() if not line.lstrip().startswith("#")),
    )
    return [(i.upper(), a.strip()) for i, _, a in (line.strip().partition(" ") for line in text.splitlines()) if i]


def docker_env() -> dict[str, str]:
    env: dict[str, str] = {}
    for instruction, args in dockerfile():
        if instruction == "ENV":
            env.update(dict(pair.split("=", 1) for pair in shlex.split(args)))
    return env


def unit() -> dict[str, list[str]]:
    """The [Service] section of deploy/rc_mcp.service: key → values in order."""
    section, service = "", {}
    for line in (ROOT / "deploy" / "rc_mcp.service").read_text().splitlines():
        line = line.strip()
        if line.startswith("[") and line.endswith("]"):
            section = line[1:-1]
        elif line and not line.startswith("#") and section == "Service":
            key, _, value = line.partition("=")
            service.setdefault(key, []).append(value)
    return service


def unit_environment(specifiers: dict[str, str]) -> dict[str, str]:
    env: dict[str, str] = {}
    for line in unit().get("Environment", []):
        for pair in shlex.split(line):
            key, _, value = pair.partition("=")
            env[key] = re.sub(r"%(.)", lambda m: specifiers[m.group(1)], value)
    return env


# ── fly.toml ──


def test_fly_port_is_the_internal_port():
    config = fly()
    assert config["http_service"]["internal_port"] == int(config.get("env", {}).get("PORT", "3000"))
    assert config["http_service"]["force_https"] is True


def test_fly_token_store_is_under_the_one_mount():
    config = fly()
    (mount,) = config["mounts"]
    store = Path(config["env"]["TOKEN_STORE_PATH"])
    assert Path(mount["destination"]) in store.parents
    # A subdirectory rc_mcp creates 0700: Fly mounts the volume itself 0755.
    assert store.parent != Path(mount["destination"])


def test_fly_health_check():
    (check,) = fly()["http_service"]["checks"]
    assert check["path"] == "/health"
    assert check.get("method", "GET").upper() == "GET"


def test_fly_deploy_strategy_works_with_a_volume():
    assert fly().get("deploy", {}).get("strategy", "rolling") in ("rolling", "immediate")


def test_fly_server_url_is_the_apps_https_origin():
    config = fly()
    # Unset in fly.toml: on Fly (FLY_APP_NAME set) rc_mcp's default is the app's own origin, so
    # renaming the app cannot leave a stale URL behind. A custom domain sets it.
    assert "SERVER_URL" not in config["env"]
    env = {**config["env"], "FLY_APP_NAME": config["app"], "MCP_SECRET": "x" * 32, "SSH_HOST": "local"}
    url = urlsplit(rc_mcp.load_config(env).server_url)
    assert url.scheme == "https" and url.path in ("", "/") and not url.query and url.port is None
    assert url.hostname == f"{config['app']}.fly.dev"


def test_fly_machine_stays_on_and_stops_gracefully():
    config = fly()
    assert config["http_service"]["auto_stop_machines"] in ("off", "stop", "suspend", True, False)
    assert config["http_service"]["auto_stop_machines"] in ("off", False)  # see the comment in fly.toml
    assert config["kill_signal"] == "SIGTERM"
    assert config["kill_timeout"] >= KILL_TIMEOUT
    assert not any(key.startswith("FLY_") for key in config["env"])
    assert all(isinstance(value, str) for value in config["env"].values())


def test_fly_vm_size():
    (vm,) = fly()["vm"]
    assert int(vm["memory"].removesuffix("mb")) >= 256


# ── Kubernetes ──


def test_k8s_namespace_enforces_the_restricted_standard():
    labels = manifest()["Namespace"]["metadata"]["labels"]
    assert labels["pod-security.kubernetes.io/enforce"] == "restricted"


def test_k8s_pod_security():
    deployment = manifest()["Deployment"]
    spec = deployment["spec"]
    assert spec["replicas"] == 1 and spec["strategy"]["type"] == "Recreate"
    pod = spec["template"]["spec"]
    assert pod["automountServiceAccountToken"] is False
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == IMAGE_UID and pod["securityContext"]["fsGroup"] == IMAGE_UID
    assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    assert pod["terminationGracePeriodSeconds"] >= KILL_TIMEOUT
    (container,) = pod["containers"]
    sc = container["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"]["drop"] == ["ALL"] and sc["runAsNonRoot"] is True
    assert not container["image"].endswith(":latest") and ":" in container["image"].rsplit("/", 1)[-1]
    assert container["imagePullPolicy"] == "IfNotPresent"
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert container[probe]["httpGet"]["path"] == "/health"
    assert {"requests", "limits"} <= container["resources"].keys()
    assert "memory" in container["resources"]["limits"]
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert "emptyDir" in volumes[mounts["/tmp"]]
    assert (
        volumes[mounts["/data"]]["persistentVolumeClaim"]["claimName"]
        == manifest()["PersistentVolumeClaim"]["metadata"]["name"]
    )


def test_k8s_settings_secrets_and_storage():
    docs = manifest()
    assert set(docs["Secret"]["stringData"]) == {"MCP_SECRET", "SSH_PRIVATE_KEY", "SSH_PASSPHRASE"}
    config = docs["ConfigMap"]["data"]
    assert {
        "SSH_KNOWN_HOSTS",
        "SERVER_URL",
        "SSH_HOST",
        "SSH_USER",
        "PROJECTS_BASE_DIR",
        "TOKEN_STORE_PATH",
    } <= config.keys()
    assert not {"MCP_SECRET", "SSH_PRIVATE_KEY", "SSH_PASSPHRASE"} & config.keys()
    container = docs["Deployment"]["spec"]["template"]["spec"]["containers"][0]
    data_mount = next(m["mountPath"] for m in container["volumeMounts"] if m["name"] == "data")
    assert Path(data_mount) in Path(config["TOKEN_STORE_PATH"]).parents
    pvc = docs["PersistentVolumeClaim"]["spec"]
    assert pvc["accessModes"] == ["ReadWriteOnce"] and pvc["resources"]["requests"]["storage"] == "1Gi"
    assert docs["Service"]["spec"]["type"] == "ClusterIP"
    assert int(config.get("PORT", "3000")) == container["ports"][0]["containerPort"]


def test_k8s_ingress_serves_server_url_with_tls():
    docs = manifest()
    host = urlsplit(docs["ConfigMap"]["data"]["SERVER_URL"]).hostname
    ingress = docs["Ingress"]["spec"]
    assert urlsplit(docs["ConfigMap"]["data"]["SERVER_URL"]).scheme == "https"
    assert [r["host"] for r in ingress["rules"]] == [host]
    assert host in ingress["tls"][0]["hosts"]
    backend = ingress["rules"][0]["http"]["paths"][0]["backend"]["service"]
    assert backend["name"] == docs["Service"]["metadata"]["name"]


# ── Docker ──


def test_dockerfile_runs_as_numeric_user_and_stops_on_sigterm():
    steps = dict(dockerfile())
    assert steps["USER"] == f"{IMAGE_UID}:{IMAGE_UID}"
    assert steps["STOPSIGNAL"] == "SIGTERM"
    assert steps["EXPOSE"] == docker_env().get("PORT", "3000")
    assert not {"MCP_SECRET", "SSH_PRIVATE_KEY", "SSH_PASSPHRASE"} & docker_env().keys()
    # Only what the image copies reaches the build context (never a .env, a key or a token store).
    ignore = [line for line in (ROOT / ".dockerignore").read_text().splitlines() if line and line[0] != "#"]
    copied = {src for instruction, args in dockerfile() if instruction == "COPY" for src in args.split()[:-1]}
    assert ignore[0] == "*" and {line.removeprefix("!") for line in ignore[1:]} == copied


def test_compose_keeps_the_key_out_of_the_environment():
    service = compose_service()
    assert service["restart"] in ("unless-stopped", "always")
    assert any(v.split(":")[1] == "/data" for v in service["volumes"])
    env = service["environment"]
    assert env["SSH_PRIVATE_KEY"].startswith("/run/secrets/")
    assert Path(env["SSH_PRIVATE_KEY"]).name in service["secrets"]
    assert Path("/data") in Path(env["TOKEN_STORE_PATH"]).parents


# ── systemd and Caddy ──


def test_unit_hands_the_key_over_as_a_credential():
    service = unit()
    env = unit_environment({"d": "/run/credentials/rc_mcp.service", "S": "/var/lib"})
    credential = service["LoadCredential"][0].split(":")[0]
    assert env["SSH_PRIVATE_KEY"] == f"/run/credentials/rc_mcp.service/{credential}"
    assert service["DynamicUser"] == ["yes"]
    state = service["StateDirectory"][0]
    assert Path(env["TOKEN_STORE_PATH"]).parent == Path("/var/lib") / state
    assert service["KillSignal"] == ["SIGTERM"] and int(service["TimeoutStopSec"][0]) >= KILL_TIMEOUT


def test_caddy_does_not_buffer_or_compress_streams():
    text = "\n".join(line.split("#")[0] for line in (ROOT / "deploy" / "Caddyfile").read_text().splitlines())
    assert "encode" not in text.split()
    assert "flush_interval -1" in " ".join(text.split())


# ── Running the image's and the unit's commands ──

needs_root = pytest.mark.skipif(
    os.geteuid() != 0 or not shutil.which("unshare") or not shutil.which("setpriv"),
    reason="needs root, unshare and setpriv (util-linux)",
)


@dataclass
class Build:
    root: Path  # a 0755 directory outside pytest's 0700 tmp tree, so other users can read it
    venv: Path
    app: Path  # the image's WORKDIR: rc_mcp.py and its byte code


@pytest.fixture(scope="session")
def build() -> Iterator[Build]:
    """The Dockerfile's install steps in a fresh venv (the interpreter running the tests stands in
    for the image's): requirements, byte-compiled site-packages, the module compiled next to it."""
    root = Path(tempfile.mkdtemp(prefix="rc_mcp-build-"))
    try:
        root.chmod(0o755)
        venv, app = root / "venv", root / "app"
        subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
        python = str(venv / "bin" / "python")
        # The Dockerfile's pip step, run by the tests' own pip (installing pip into the venv first
        # would double the time). The Dockerfile installs with PIP_NO_CACHE_DIR; here pip's cache
        # keeps reruns fast.
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "--python",
                python,
                "install",
                "-q",
                "--no-compile",
                "--disable-pip-version-check",
                "-r",
                str(ROOT / "requirements.txt"),
            ],
            check=True,
            stdin=subprocess.DEVNULL,
        )
        purelib = subprocess.run(
            [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
        subprocess.run([python, "-m", "compileall", "-q", purelib], check=True)
        app.mkdir()
        shutil.copy2(ROOT / "rc_mcp.py", app)
        subprocess.run([python, "-m", "compileall", "-q", "rc_mcp.py"], cwd=app, check=True)
        yield Build(root, venv, app)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def expose_interpreter(stash: Path) -> str:
    """Shell lines that make the base interpreter reachable for other users in the namespace when
    it lives under a private directory (e.g. pyenv in /root): a tmpfs over that directory, with
    only the interpreter bound back in."""
    prefix = Path(sys.base_prefix).resolve()
    blockers = [p for p in reversed(prefix.parents) if p != Path("/") and not p.stat().st_mode & stat.S_IXOTH]
    if not blockers:
        return ""
    stash.mkdir()
    q = shlex.quote
    return (
        f"mount --bind {q(str(prefix))} {q(str(stash))}\n"
        f"mount -t tmpfs -o mode=0755 tmpfs {q(str(blockers[0]))}\n"
        f"mkdir -p {q(str(prefix))}\nmount --bind {q(str(stash))} {q(str(prefix))}\n"
    )


def sandboxed(
    argv: list[str], *, uid: int, writable: list[Path], prepare: str = "", cwd: str = "/", umask: str = "022"
) -> list[str]:
    """argv as `uid` in a private mount namespace where every mount is read-only except `writable`."""
    keep = " ".join(shlex.quote(str(p)) for p in writable)
    script = f"""set -eu
{prepare}
for d in {keep}; do mount --bind "$d" "$d"; done
awk '$6 !~ /^ro/ {{print $5}}' /proc/self/mountinfo | sort -u | while read -r m; do
  case "$m" in /proc|/proc/*|/sys|/sys/*|/dev|/dev/pts|/dev/pts/*|/dev/mqueue) continue ;; esac
  case " {keep} " in *" $m "*) continue ;; esac
  mount -o remount,bind,ro "$m"
done
cd {shlex.quote(cwd)}
umask {umask}
exec setpriv --reuid={uid} --regid={uid} --clear-groups --no-new-privs -- "$@"
"""
    return ["unshare", "--mount", "--propagation", "private", "sh", "-c", script, "sandbox", *argv]


PROBE = """import os, sys
bad = []
for d in sys.argv[2:]:
    try:
        open(os.path.join(d, ".probe"), "w").close()
        os.unlink(os.path.join(d, ".probe"))
        bad.append(d)
    except OSError:
        pass
try:
    open(os.path.join(sys.argv[1], ".probe"), "w").close()
    os.unlink(os.path.join(sys.argv[1], ".probe"))
except OSError as exc:
    bad.append(f"data directory: {exc}")
print(bad)
"""


def assert_only_writable(sandbox_args: dict, python: str, data: Path, others: list[str]) -> None:
    out = subprocess.run(
        sandboxed([python, "-c", PROBE, str(data), *others], **sandbox_args), capture_output=True, text=True, timeout=30
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]", f"writable outside the data directory (or data not writable): {out.stdout}"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def request(
    port: int, method: str, path: str, body: str | None = None, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


def fixed_client_token(port: int, server_url: str, secret: str) -> str:
    """Claude.ai's flow with pasted credentials: /authorize answers 302 with a code at once."""
    client_id = hashlib.sha256(f"{secret}:client_id".encode()).hexdigest()[:36]
    client_secret = hashlib.sha256(f"{secret}:client_secret".encode()).hexdigest()
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    resource = f"{server_url}/mcp"
    query = urlencode(
        {
            "response_type": "code",
            "client_id": client_id,
            "redirect_uri": CALLBACK,
            "code_challenge": challenge,
            "code_challenge_method": "S256",
            "state": "xyz",
            "resource": resource,
        }
    )
    status, headers, body = request(port, "GET", f"/authorize?{query}")
    assert status == 302, (status, body[:300])
    location = parse_qs(urlsplit(headers["location"]).query)
    assert location["state"] == ["xyz"]
    form = urlencode(
        {
            "grant_type": "authorization_code",
            "code": location["code"][0],
            "redirect_uri": CALLBACK,
            "code_verifier": verifier,
            "client_id": client_id,
            "client_secret": client_secret,
            "resource": resource,
        }
    )
    status, _, body = request(port, "POST", "/token", form, {"Content-Type": "application/x-www-form-urlencoded"})
    assert status == 200, (status, body[:300])
    token = json.loads(body)
    assert token["token_type"].lower() == "bearer"
    return token["access_token"]


def run_and_link(argv: list[str], env: dict[str, str], port: int, server_url: str, store: Path, uid: int) -> None:
    """Start the server, wait for /health, get a token, use it, check the store, stop it with SIGTERM."""
    with tempfile.TemporaryFile() as log:
        proc = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)

        def output() -> str:
            log.seek(0)
            return log.read().decode(errors="replace")[-3000:]

        try:
            deadline = time.monotonic() + 60
            while True:
                assert proc.poll() is None, f"exited with {proc.returncode}:\n{output()}"
                assert time.monotonic() < deadline, f"no /health within 60 s:\n{output()}"
                try:
                    status, _, body = request(port, "GET", "/health")
                    if status == 200:
                        assert json.loads(body)["ok"] is True
                        break
                except OSError:
                    pass
                time.sleep(0.05)
            token = fixed_client_token(port, server_url, env["MCP_SECRET"])
            init = {
                "jsonrpc": "2.0",
                "id": 1,
                "method": "initialize",
                "params": {
                    "protocolVersion": "2025-06-18",
                    "capabilities": {},
                    "clientInfo": {"name": "deploy-test", "version": "1"},
                },
            }
            status, _, body = request(
                port,
                "POST",
                "/mcp",
                json.dumps(init),
                {
                    "Authorization": f"Bearer {token}",
                    "Content-Type": "application/json",
                    "Accept": "application/json, text/event-stream",
                    "Host": urlsplit(server_url).netloc,
                },
            )
            assert status == 200, (status, body[:300], output())
            # The state: a 0600 file in a 0700 directory, both the server user's.
            info, dir_info = store.stat(), store.parent.stat()
            assert (info.st_uid, dir_info.st_uid) == (uid, uid)
            assert stat.S_IMODE(info.st_mode) == 0o600 and stat.S_IMODE(dir_info.st_mode) == 0o700
        finally:
            proc.terminate()
            try:
                code = proc.wait(timeout=KILL_TIMEOUT)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
                pytest.fail(f"still running {KILL_TIMEOUT} s after SIGTERM:\n{output()}")
        # uvicorn shuts down gracefully, then re-raises SIGTERM: systemd, Docker and Fly count that as a
        # clean stop.
        assert code in (0, -signal.SIGTERM), f"exit status {code} after SIGTERM:\n{output()}"
        assert "Application shutdown complete" in output()


def ed25519_key() -> str:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519

    return (
        ed25519.Ed25519PrivateKey.generate()
        .private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption())
        .decode()
    )


def closed_port() -> int:
    return free_port()  # nothing listens there: the server's SSH warm-up fails at once, and says so


@needs_root
def test_the_images_command_serves_with_only_the_data_directory_writable(build, tmp_path_factory):
    """CMD, ENV, USER and WORKDIR as the Dockerfile has them; the key and the store as compose.yaml
    mounts them (a 0400 key file of the user's, TOKEN_STORE_PATH in a subdirectory of the volume)."""
    steps = dict(dockerfile())
    uid = int(steps["USER"].split(":")[0])
    cmd = json.loads(steps["CMD"])
    assert cmd[0] == "python"
    run = Path(tempfile.mkdtemp(prefix="rc_mcp-image-", dir=build.root))
    run.chmod(0o755)
    data, secrets_dir = run / "data", run / "secrets"
    data.mkdir(mode=0o700)
    os.chown(data, uid, uid)
    secrets_dir.mkdir()
    key = secrets_dir / "ssh_key"
    key.write_text(ed25519_key())
    key.chmod(0o400)
    os.chown(key, uid, uid)
    port, secret = free_port(), secrets.token_hex(32)
    server_url = f"http://127.0.0.1:{port}"
    env = {
        **docker_env(),
        "PATH": f"{build.venv / 'bin'}:/usr/local/bin:/usr/bin:/bin",
        "HOME": str(data),
        "PORT": str(port),
        "HOST": "127.0.0.1",
        "SERVER_URL": server_url,
        "MCP_SECRET": secret,
        "SSH_HOST": "127.0.0.1",
        "SSH_PORT": str(closed_port()),
        "SSH_USER": "dev",
        "SSH_PRIVATE_KEY": str(key),
        "PROJECTS_BASE_DIR": "/home/dev/projects",
        "TOKEN_STORE_PATH": str(data / "rc_mcp" / "oauth-tokens.json"),
    }
    python = str(build.venv / "bin" / "python")
    args = dict(uid=uid, writable=[data], cwd=str(build.app), prepare=expose_interpreter(run / "interpreter"))
    assert_only_writable(
        args, python, data, ["/", "/tmp", "/var/tmp", "/dev/shm", str(build.app), str(build.venv), str(run)]
    )
    run_and_link(
        sandboxed([python, *cmd[1:]], **args), env, port, server_url, data / "rc_mcp" / "oauth-tokens.json", uid
    )
    # The byte code the image's build step wrote is what a read-only root leaves to import.
    assert list((build.app / "__pycache__").glob("rc_mcp.*.pyc"))


@needs_root
def test_the_units_command_serves_as_systemd_would_start_it(build):
    """ExecStart verbatim, with the install layout README describes bound into place (/opt/rc_mcp),
    the unit's Environment= (EnvironmentFile= overriding it, as systemd does), the credential
    directory %d holding the key, the state directory %S/rc_mcp 0700, UMask and a dynamic uid."""
    service = unit()
    uid = 61234  # in systemd's DynamicUser range
    exec_start = shlex.split(service["ExecStart"][0])
    assert exec_start[1:] == ["-P", "-m", "rc_mcp"]  # the byte-compiled module, found on PYTHONPATH only
    app_dir = Path(unit_environment({"d": "", "S": ""})["PYTHONPATH"])
    venv_dir = Path(exec_start[0]).parent.parent
    state_dir = Path("/var/lib") / service["StateDirectory"][0]
    credentials = Path("/run/credentials/rc_mcp.service")
    credential, _, source = service["LoadCredential"][0].partition(":")
    run = Path(tempfile.mkdtemp(prefix="rc_mcp-unit-", dir=build.root))
    run.chmod(0o755)
    key = run / "ssh_key"
    key.write_text(ed25519_key())
    key.chmod(0o600)
    port, secret = free_port(), secrets.token_hex(32)
    server_url = f"http://127.0.0.1:{port}"
    env_file = {
        "MCP_SECRET": secret,
        "SERVER_URL": server_url,
        "PORT": str(port),
        "SSH_HOST": "127.0.0.1",
        "SSH_PORT": str(closed_port()),
        "SSH_USER": "dev",
        "PROJECTS_BASE_DIR": "/home/dev/projects",
    }
    env = {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "HOME": "/",
        "LANG": "C.UTF-8",
        "CREDENTIALS_DIRECTORY": str(credentials),
        "STATE_DIRECTORY": str(state_dir),
        **unit_environment({"d": str(credentials), "S": "/var/lib", "t": "/run", "%": "%"}),
        **env_file,
    }
    q = shlex.quote
    prepare = (
        expose_interpreter(run / "interpreter")
        + f"""
mount -t tmpfs -o mode=0755 tmpfs {q(str(app_dir.parent))}
mkdir -p {q(str(app_dir))} {q(str(venv_dir))}
cp -p {q(str(build.app / "rc_mcp.py"))} {q(str(app_dir))}/
cp -pr {q(str(build.app / "__pycache__"))} {q(str(app_dir))}/
mount --bind {q(str(build.venv))} {q(str(venv_dir))}
mount -t tmpfs -o mode=0755 tmpfs /var/lib
install -d -m 0700 -o {uid} -g {uid} {q(str(state_dir))}
mount -t tmpfs -o mode=0755 tmpfs /run
install -d -m 0500 -o {uid} -g {uid} {q(str(credentials))}
install -m 0400 -o {uid} -g {uid} {q(str(key))} {q(str(credentials / credential))}
"""
    )
    assert source.startswith("/etc/")
    # The state directory is a host directory bound into place, so the test can look at the store.
    store_dir = run / "state"
    store_dir.mkdir(mode=0o700)
    os.chown(store_dir, uid, uid)
    prepare += f"mount --bind {q(str(store_dir))} {q(str(state_dir))}\n"
    args = dict(
        uid=uid,
        writable=[state_dir],
        prepare=prepare,
        cwd=re.sub(r"%S", "/var/lib", service["WorkingDirectory"][0]),
        umask=service["UMask"][0],
    )
    assert_only_writable(
        args,
        exec_start[0],
        state_dir,
        ["/", "/tmp", "/var/tmp", "/dev/shm", "/run", str(app_dir), str(venv_dir), str(credentials)],
    )
    assert Path(env["TOKEN_STORE_PATH"]).parent == state_dir
    run_and_link(sandboxed(exec_start, **args), env, port, server_url, store_dir / "oauth-tokens.json", uid)
