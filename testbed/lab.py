"""A real SSH "dev server" on 127.0.0.1 for tests and benchmarks, plus a local-mode dev home.

    from testbed.lab import DevServer, make_local_devhome

    with DevServer.start() as dev:          # root: dedicated user `rcdev`, private sshd on a free port
        dev.run("tmux ls")                  # /bin/sh -c as that user, with the SSH session's env
        dev.fake_claude_config({"names": {"slow": {"connect_delay": 5}}})

Root mode (CI): creates the user (`useradd -m`, `usermod -p '*'`), its keys, a projects tree of git
repos, the fake `claude` (testbed/fake_claude.py) at ~/.local/bin/claude and at an absolute path,
and starts `/usr/sbin/sshd -D -f <cfg> -E <log>` on a free loopback port (publickey only, UsePAM no,
sshd's default MaxSessions). Non-root mode: the same for the current user with a private HOME that
sshd sets via `SetEnv` (plus TMUX_TMPDIR, so the developer's own tmux server is never touched).
No pytest dependency; nothing outside this repository is read except the system's tools.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import pwd
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# ── Constants ──
SSHD = "/usr/sbin/sshd"  # sshd re-exec requires an absolute path
SSH_EXEC_PATH = "/usr/local/bin:/usr/bin:/bin:/usr/games"  # Debian sshd's PATH for `ssh host CMD`
FAKE_CLAUDE_SOURCE = Path(__file__).with_name("fake_claude.py")
SYSTEM_PYTHON = "/usr/bin/python3"
DEFAULT_USER = "rcdev"
LAB_MARKER = ".rc-lab-user"  # in a home created by the lab: safe to delete on the next run
PASSPHRASE = "rc-lab passphrase"
GIT_IDENTITY = "-c user.name='RC Lab' -c user.email=lab@example.invalid"
REPOS = ("alpha", "beta", "web app", "nested/deeper/gamma", "org/repo", ".hidden")
STATE_DIRS = (".fake-claude", ".local/state/rc-mcp", ".claude")
BASHRC_PATH_LINE = 'export PATH="$HOME/.local/bin:$PATH"  # rc-lab: claude on the SSH PATH\n'
START_TIMEOUT = 10.0

# The tree every dev home gets (run as its owner with HOME set). `notes` and `.hidden` must not be
# listed as projects; `escape` is a symlink to a repo outside the projects dir.
TREE_SCRIPT = f"""set -eu
cd "$HOME"
mkrepo() {{
  mkdir -p "$1"
  git -C "$1" init -q -b main
  printf '# %s\\n' "${{1##*/}}" > "$1/README.md"
  git -C "$1" add README.md
  git -C "$1" {GIT_IDENTITY} commit -q -m 'initial commit'
}}
mkdir -p projects .local/bin
for repo in {" ".join(shlex.quote(r) for r in REPOS)}; do mkrepo "projects/$repo"; done
mkrepo outside-repo
mkdir -p projects/with-claude/.claude projects/notes
printf '{{\\n  "permissions": {{}}\\n}}\\n' > projects/with-claude/.claude/settings.json
printf '# with-claude\\n\\nProject instructions.\\n' > projects/with-claude/CLAUDE.md
printf 'not a project\\n' > projects/notes/todo.txt
ln -s "$HOME/outside-repo" projects/escape
"""


# ── Helpers ──
def fake_claude_executable() -> bytes:
    """fake_claude.py with the interpreter line this machine needs."""
    interpreter = SYSTEM_PYTHON if os.access(SYSTEM_PYTHON, os.X_OK) else sys.executable
    lines = FAKE_CLAUDE_SOURCE.read_text(encoding="utf-8").splitlines(keepends=True)
    if lines and lines[0].startswith("#!"):
        lines = lines[1:]
    return (f"#!{interpreter}\n" + "".join(lines)).encode("utf-8")


def default_claude_json(projects: Path) -> dict:
    """~/.claude.json that lets launches under `projects` go straight through."""
    return {
        "numStartups": 1,
        "hasCompletedOnboarding": True,
        "remoteDialogSeen": True,
        "projects": {str(projects): {"hasTrustDialogAccepted": True}},
    }


def listening_socket(port: int = 0) -> socket.socket:
    """A TCP socket bound to 127.0.0.1 (port 0: a free one). Hand it to a server, or read its port
    and close it for a program that binds by itself (sshd, `python rc_mcp.py`)."""
    # IPPROTO_TCP: asyncio sets TCP_NODELAY on the accepted connections only when the socket says so
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    return sock


def process_uid_and_state(pid: int) -> tuple[int, str] | None:
    """(real uid, state letter) of a process, None when it is gone."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    fields = dict(line.split(":", 1) for line in text.splitlines() if ":" in line)
    return int(fields["Uid"].split()[0]), fields["State"].split()[0]


def pid_running(pid: int) -> bool:
    """True unless gone or a zombie (some container inits never reap orphans)."""
    info = process_uid_and_state(pid)
    return info is not None and info[1] != "Z"


def pids_of_uid(uid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            info = process_uid_and_state(int(entry.name))
            if info and info[0] == uid and info[1] != "Z":
                found.append(int(entry.name))
    return found


def wait_pids_gone(pids: list[int], timeout: float) -> list[int]:
    deadline = time.monotonic() + timeout
    alive = [p for p in pids if pid_running(p)]
    while alive and time.monotonic() < deadline:
        time.sleep(0.02)
        alive = [p for p in alive if pid_running(p)]
    return alive


def run_text(
    argv: list[str], cwd: Path, timeout: float, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """A command with no stdin, its output captured as text (undecodable bytes replaced)."""
    return subprocess.run(
        argv,
        env=env,
        cwd=cwd,
        text=True,
        encoding="utf-8",
        errors="replace",
        capture_output=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


def kill_pids(pids: list[int], sig: int) -> None:
    for pid in pids:
        try:
            os.kill(pid, sig)
        except (ProcessLookupError, PermissionError):
            pass


def ssh_fingerprint(public_line: str) -> str:
    """'SHA256:…' of an OpenSSH public key line, as `ssh-keygen -l` prints it."""
    blob = base64.b64decode(public_line.split()[1])
    return "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")


def short_tmpdir(prefix: str) -> Path:
    """A private dir whose tmux socket path (<dir>/tmux-<uid>/default) stays well under 108 bytes."""
    path = tempfile.mkdtemp(prefix=prefix)
    if len(path) > 60:  # a long $TMPDIR: fall back to the generic location
        os.rmdir(path)
        path = tempfile.mkdtemp(prefix=prefix, dir="/tmp")
    return Path(path)


# ── Keys ──
# name → (ssh-keygen options, passphrase). RSA is 2048 bits: paramiko treats every size alike, and
# ssh-keygen's default 3072 can take seconds to find its primes. Encrypted OpenSSH-format keys use
# 2 bcrypt rounds (`-a 2`) instead of 16: the same decryption code, a fraction of the time.
KEY_SPECS: dict[str, tuple[list[str], str]] = {
    "ed25519": (["-t", "ed25519"], ""),
    "rsa": (["-t", "rsa", "-b", "2048", "-m", "PEM"], ""),
    "ecdsa": (["-t", "ecdsa", "-b", "256"], ""),
    "ed25519_enc": (["-t", "ed25519", "-a", "2"], PASSPHRASE),
    "rsa_enc": (["-t", "rsa", "-b", "2048", "-m", "PEM"], PASSPHRASE),
    "ecdsa_enc": (["-t", "ecdsa", "-b", "256", "-a", "2"], PASSPHRASE),
    "rsa_openssh_enc": (["-t", "rsa", "-b", "2048", "-a", "2"], PASSPHRASE),  # OpenSSH format, bcrypt KDF
    "unauthorized": (["-t", "ed25519"], ""),
}
LAB_CLIENT_KEYS = ("ed25519", "rsa", "ecdsa", "ed25519_enc", "rsa_enc", "ecdsa_enc", "unauthorized")
HOST_KEY_SPECS: dict[str, tuple[list[str], str]] = {
    "host": (["-t", "ed25519"], ""),
    "host_wrong": (["-t", "ed25519"], ""),
}
KeyJobs = list[tuple[str, Path, subprocess.Popen[bytes]]]


def start_keygen(directory: Path, specs: dict[str, tuple[list[str], str]]) -> KeyJobs:
    """Start one ssh-keygen per spec, all at once; finish_keygen() waits for them."""
    jobs = []
    for name, (args, passphrase) in specs.items():
        path = directory / name
        for stale in (path, path.with_suffix(".pub")):
            stale.unlink(missing_ok=True)
        proc = subprocess.Popen(
            ["ssh-keygen", "-q", *args, "-N", passphrase, "-C", f"rc-lab-{name}", "-f", str(path)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        jobs.append((name, path, proc))
    return jobs


def finish_keygen(jobs: KeyJobs) -> dict[str, Path]:
    keys = {}
    for name, path, proc in jobs:
        _, stderr = proc.communicate(timeout=60)
        if proc.returncode != 0:
            raise RuntimeError(f"ssh-keygen {name} failed: {stderr.decode().strip()}")
        keys[name] = path
    return keys


def make_keys(directory: Path, names: tuple[str, ...] | None = None) -> dict[str, Path]:
    """Private keys (public halves beside them as NAME.pub) from KEY_SPECS, generated in parallel.
    Encrypted ones (`*_enc`) use PASSPHRASE."""
    specs = {name: spec for name, spec in KEY_SPECS.items() if names is None or name in names}
    return finish_keygen(start_keygen(directory, specs))


# ── Shared by the SSH dev server and the local dev home ──
class _DevHome:
    """A dev user's home: the fake claude's config and trace, seeding, reset."""

    home: Path
    projects: Path
    claude_user_bin: Path
    uid: int
    gid: int
    _bashrc_original: bytes | None = None

    def run(self, script: str, timeout: float = 10) -> subprocess.CompletedProcess[str]:
        raise NotImplementedError

    # files owned by the dev user (the lab may be root)
    def _own(self, path: Path) -> None:
        if os.geteuid() == 0 and self.uid != 0:
            os.chown(path, self.uid, self.gid, follow_symlinks=False)

    def _mkdirs(self, path: Path) -> None:
        missing = []
        while not path.exists():
            missing.append(path)
            path = path.parent
        for directory in reversed(missing):
            directory.mkdir(mode=0o755)
            self._own(directory)

    def _write(self, path: Path, data: bytes, mode: int = 0o644) -> None:
        self._mkdirs(path.parent)
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        tmp.write_bytes(data)
        os.chmod(tmp, mode)
        self._own(tmp)
        os.replace(tmp, path)

    # the fake claude
    def install_user_claude(self) -> None:
        """(Re)install the fake at ~/.local/bin/claude, the native installer's place."""
        self._write(self.claude_user_bin, fake_claude_executable(), 0o755)

    def uninstall_user_claude(self) -> None:
        """Remove ~/.local/bin/claude: even `PATH=$HOME/.local/bin:$PATH claude` is not found."""
        self.claude_user_bin.unlink(missing_ok=True)

    def fake_claude_config(self, config: dict) -> None:
        """Write ~/.fake-claude/config.json (knobs; see testbed/README.md)."""
        self._write(self.home / ".fake-claude" / "config.json", (json.dumps(config, indent=2) + "\n").encode())

    def fake_claude_trace(self) -> list[dict]:
        """One dict per `claude` invocation, oldest first."""
        return self._fake_claude_records("trace.jsonl")

    def fake_claude_ready(self) -> list[dict]:
        """One dict per Remote Control server whose URL was painted (`ts`, `pid`, `name`, `phase`),
        oldest first: with the trace's `exec_ts`, claude's own start-up (testbed/README.md)."""
        return self._fake_claude_records("ready.jsonl")

    def _fake_claude_records(self, filename: str) -> list[dict]:
        try:
            text = (self.home / ".fake-claude" / filename).read_text(encoding="utf-8")
        except FileNotFoundError:
            return []
        records = []
        for line in text.splitlines():
            try:
                records.append(json.loads(line))
            except ValueError:
                pass  # a line being written right now
        return records

    def claude_json(self) -> dict:
        try:
            return json.loads((self.home / ".claude.json").read_text(encoding="utf-8"))
        except (FileNotFoundError, ValueError):
            return {}

    def write_claude_json(self, data: dict) -> None:
        """Seed ~/.claude.json (e.g. drop remoteDialogSeen to get the consent prompt)."""
        self._write(self.home / ".claude.json", (json.dumps(data, indent=2) + "\n").encode(), 0o600)

    def add_bashrc_path(self) -> None:
        """Put ~/.local/bin on the non-interactive SSH PATH (a line above .bashrc's guard)."""
        bashrc = self.home / ".bashrc"
        original = bashrc.read_bytes() if bashrc.exists() else b""
        if self._bashrc_original is None:
            self._bashrc_original = original
        if BASHRC_PATH_LINE.encode() not in original:
            self._write(bashrc, BASHRC_PATH_LINE.encode() + original)

    def _populate(self) -> None:
        result = self.run(TREE_SCRIPT, timeout=60)
        if result.returncode != 0:
            raise RuntimeError(f"creating the projects tree failed: {result.stderr.strip()}")
        self.install_user_claude()
        self.write_claude_json(default_claude_json(self.projects))

    def _stop_fakes(self) -> None:
        """Kill the user's tmux server and wait for it to exit (a `tmux new-session` sent to a server
        that is still shutting down gets a pane that dies at once), then wait for every traced fake
        claude to exit."""
        server = self.run(
            "tmux display-message -p '#{pid}' 2>/dev/null; tmux kill-server 2>/dev/null; true"
        ).stdout.strip()
        if server.isdigit():
            wait_pids_gone([int(server)], 5.0)
        pids = []
        for record in self.fake_claude_trace():
            pid = record.get("pid")
            try:
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            except OSError:
                continue
            info = process_uid_and_state(pid)
            if info and info[0] == self.uid and b"claude" in cmdline:
                pids.append(pid)
        alive = wait_pids_gone(pids, 2.0)
        kill_pids(alive, signal.SIGTERM)
        alive = wait_pids_gone(alive, 2.0)
        kill_pids(alive, signal.SIGKILL)
        wait_pids_gone(alive, 2.0)

    def reset(self) -> None:
        """Back to the state right after start: no tmux server, no fake-claude state/trace/config
        or lock files, no ~/.local/state/rc-mcp, default ~/.claude.json, .bashrc and fake
        install. Keys and the projects tree are kept."""
        self._stop_fakes()
        for rel in STATE_DIRS:
            shutil.rmtree(self.home / rel, ignore_errors=True)
        self.write_claude_json(default_claude_json(self.projects))
        self.install_user_claude()
        if self._bashrc_original is not None:
            self._write(self.home / ".bashrc", self._bashrc_original)
            self._bashrc_original = None


# ── Local mode: no SSH, the current user ──
class LocalDevHome(_DevHome):
    """A dev home for local-mode tests; commands run as the current user with env()."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.home = self.root / "home"
        self.projects = self.home / "projects"
        self.claude_user_bin = self.home / ".local" / "bin" / "claude"
        self.claude_bin = self.claude_user_bin
        self.uid, self.gid = os.getuid(), os.getgid()
        self.tmux_tmpdir = short_tmpdir("rct-")

    def env(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        """os.environ with HOME and a private TMUX_TMPDIR; TMUX/XDG_STATE_HOME removed."""
        env = dict(os.environ)
        for name in ("TMUX", "TMUX_PANE", "XDG_STATE_HOME"):
            env.pop(name, None)  # $TMUX would point tmux at the caller's own server
        env["HOME"] = str(self.home)
        env["TMUX_TMPDIR"] = str(self.tmux_tmpdir)
        env.update(extra or {})
        return env

    def run(self, script: str, timeout: float = 10) -> subprocess.CompletedProcess[str]:
        env = self.env()
        for name in list(env):
            if name.startswith("GIT_"):
                env.pop(name)  # e.g. GIT_DIR from a hook would redirect the tree's git commands
        return run_text(["/bin/sh", "-c", script], self.home, timeout, env)

    def close(self) -> None:
        """Stop this home's tmux server and fakes; remove the private tmux dir (not root)."""
        self._stop_fakes()
        shutil.rmtree(self.tmux_tmpdir, ignore_errors=True)

    def __enter__(self) -> LocalDevHome:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def make_local_devhome(root: Path) -> LocalDevHome:
    """root/home with .local/bin/claude (the fake), a trusted projects tree, consent seen."""
    local = LocalDevHome(root)
    local.home.mkdir(parents=True, exist_ok=True)
    local._populate()
    return local


# ── SSH mode: a private sshd on 127.0.0.1 ──
class DevServer(_DevHome):
    """A real sshd + tmux + git dev server with the fake claude. Use start() or `with`."""

    host = "127.0.0.1"

    def __init__(self) -> None:
        self.port = 0
        self.user = ""
        self.root_mode = os.geteuid() == 0
        self.keys: dict[str, Path] = {}
        self.passphrase = PASSPHRASE
        self._proc: subprocess.Popen[bytes] | None = None
        self._own_lab = False
        self._abs_dir: Path | None = None
        self._user_created = False
        self._stopped = False

    # availability
    @classmethod
    def available(cls) -> tuple[bool, str]:
        """(True, mode) when start() can work here, else (False, why) for pytest.skip."""
        if not sys.platform.startswith("linux"):
            return False, f"the SSH lab needs Linux (this is {sys.platform})"
        if not os.access(SSHD, os.X_OK):
            return False, f"no {SSHD} (apt-get install openssh-server)"
        tools = ["ssh-keygen", "tmux", "git"]
        if os.geteuid() == 0:
            tools += ["useradd", "usermod", "userdel", "runuser"]
        missing = [tool for tool in tools if shutil.which(tool) is None]
        if missing:
            return False, "missing tools: " + ", ".join(missing)
        return True, "root: dedicated user" if os.geteuid() == 0 else "non-root: current user"

    # lifecycle
    @classmethod
    def start(cls, workdir: Path | None = None, user: str = DEFAULT_USER) -> DevServer:
        ok, why = cls.available()
        if not ok:
            raise RuntimeError(f"DevServer unavailable: {why}")
        server = cls()
        try:
            server._start(workdir, user)
        except BaseException:
            server.stop()
            raise
        return server

    def __enter__(self) -> DevServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _start(self, workdir: Path | None, user: str) -> None:
        if workdir is None:
            self.lab = Path(tempfile.mkdtemp(prefix="rc-lab-"))
            self._own_lab = True
        else:
            self.lab = Path(workdir)
            self.lab.mkdir(parents=True, exist_ok=True)
        for sub in ("sshd", "client"):
            (self.lab / sub).mkdir(mode=0o700, exist_ok=True)
        keygen = self._start_keygen()  # in parallel with the user setup
        if self.root_mode:
            self._create_user(user)
            # claude_abs outside home, in a dir the user can reach whatever the lab dir's modes
            self._abs_dir = Path(tempfile.mkdtemp(prefix="rc-fake-claude-"))
            os.chmod(self._abs_dir, 0o755)
        else:
            self.user = pwd.getpwuid(os.getuid()).pw_name
            self.uid, self.gid = os.getuid(), os.getgid()
            self.home = self.lab / "home"
            self.home.mkdir(mode=0o700, exist_ok=True)
            self.tmux_tmpdir = short_tmpdir("rct-")
            self._abs_dir = self.lab / "opt"
            skel = Path("/etc/skel")
            for name in (".bashrc", ".profile"):
                if (skel / name).is_file() and not (self.home / name).exists():
                    shutil.copyfile(skel / name, self.home / name)
        self.projects = self.home / "projects"
        self.claude_user_bin = self.home / ".local" / "bin" / "claude"
        self.claude_abs = self._abs_dir / "bin" / "claude"
        self.claude_abs.parent.mkdir(parents=True, exist_ok=True)
        os.chmod(self.claude_abs.parent, 0o755)
        self.claude_abs.write_bytes(fake_claude_executable())
        os.chmod(self.claude_abs, 0o755)
        self._populate()
        self._finish_keys(keygen)
        self._start_sshd()

    def stop(self) -> None:
        """Stop sshd (pid file, wait), the user's tmux server; userdel -r (root); remove the lab."""
        if self._stopped:
            return
        self._stopped = True
        self._stop_sshd()
        if getattr(self, "home", None) is not None and self.user:
            try:
                self._stop_fakes()
            except (OSError, subprocess.SubprocessError):
                pass
        if self.root_mode and self._user_created:
            self._delete_user(self.user, self.uid)
        if not self.root_mode and getattr(self, "tmux_tmpdir", None):
            shutil.rmtree(self.tmux_tmpdir, ignore_errors=True)
        if self.root_mode and self._abs_dir is not None:
            shutil.rmtree(self._abs_dir, ignore_errors=True)
        if self._own_lab:
            shutil.rmtree(self.lab, ignore_errors=True)

    # running things as the dev user, with the environment an SSH exec gets
    def _session_env(self) -> list[str]:
        env = [
            f"HOME={self.home}",
            f"USER={self.user}",
            f"LOGNAME={self.user}",
            "SHELL=/bin/bash",
            f"PATH={SSH_EXEC_PATH}",
        ]
        if not self.root_mode:
            env.append(f"TMUX_TMPDIR={self.tmux_tmpdir}")
        return env

    def run(self, script: str, timeout: float = 10) -> subprocess.CompletedProcess[str]:
        """/bin/sh -c script as the dev user (runuser as root), env like an SSH exec."""
        argv = ["env", "-i", *self._session_env(), "/bin/sh", "-c", script]
        if self.root_mode:
            argv = ["runuser", "-u", self.user, "--", *argv]
        return run_text(argv, self.home, timeout)

    # the user (root mode)
    def _create_user(self, user: str) -> None:
        try:
            existing = pwd.getpwnam(user)
        except KeyError:
            existing = None
        if existing is not None:
            if not (Path(existing.pw_dir) / LAB_MARKER).exists():
                raise RuntimeError(
                    f"user {user!r} exists and was not created by the lab; pass another user= to DevServer.start()"
                )
            self._clean_crashed_run(Path(existing.pw_dir))  # left over by a crashed run
            self._delete_user(user, existing.pw_uid)
        base = "/home"
        defaults = subprocess.run(["useradd", "-D"], capture_output=True, text=True).stdout
        for line in defaults.splitlines():
            if line.startswith("HOME="):
                base = line.split("=", 1)[1]
        stale_home = Path(base) / user
        if stale_home.exists():
            if not (stale_home / LAB_MARKER).exists():
                raise RuntimeError(f"{stale_home} exists and was not created by the lab")
            shutil.rmtree(stale_home)
        subprocess.run(
            ["useradd", "-m", "-s", "/bin/bash", user], check=True, capture_output=True, stdin=subprocess.DEVNULL
        )
        self._user_created = True
        # useradd's locked "!" makes sshd (UsePAM no) refuse even keys: "account is locked"
        subprocess.run(["usermod", "-p", "*", user], check=True, capture_output=True)
        entry = pwd.getpwnam(user)
        self.user, self.uid, self.gid = user, entry.pw_uid, entry.pw_gid
        self.home = Path(entry.pw_dir)
        self._write(self.home / LAB_MARKER, b"created by testbed/lab.py\n")

    def _write_marker(self) -> None:
        """What a later run needs to clean up after a crash of this one (see _delete_user)."""
        removable = [str(p) for p in (self.lab if self._own_lab else None, self._abs_dir) if p is not None]
        marker = {
            "sshd_pid": self._proc.pid if self._proc else None,
            "sshd_config": str(self.lab / "sshd" / "sshd_config"),
            "remove": removable,
        }
        self._write(self.home / LAB_MARKER, (json.dumps(marker) + "\n").encode())

    @staticmethod
    def _clean_crashed_run(home: Path) -> None:
        """Stop the sshd and remove the temp dirs a crashed run recorded in its marker."""
        try:
            marker = json.loads((home / LAB_MARKER).read_text())
        except (OSError, ValueError):
            return
        pid, config = marker.get("sshd_pid"), marker.get("sshd_config")
        if isinstance(pid, int) and config:
            try:
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()  # sshd rewrites its title
            except OSError:
                cmdline = b""
            if config.encode() in cmdline and pid_running(pid):
                kill_pids([pid], signal.SIGTERM)
                wait_pids_gone([pid], 3.0)
        for path in marker.get("remove", []):
            if Path(path).name.startswith(("rc-lab-", "rc-fake-claude-")):
                shutil.rmtree(path, ignore_errors=True)

    def _delete_user(self, user: str, uid: int) -> None:
        subprocess.run(
            ["runuser", "-u", user, "--", "env", "-i", f"PATH={SSH_EXEC_PATH}", "tmux", "kill-server"],
            capture_output=True,
            stdin=subprocess.DEVNULL,
            timeout=10,
        )
        pids = pids_of_uid(uid)
        kill_pids(pids, signal.SIGKILL)
        wait_pids_gone(pids, 3.0)
        result = subprocess.run(["userdel", "-r", user], capture_output=True, text=True)
        if result.returncode not in (0, 12):  # 12: home could not be removed (mail spool etc.)
            # zombies nobody reaps still count as "used by process N"
            subprocess.run(["userdel", "-r", "-f", user], capture_output=True, text=True)
        tmux_dir = Path("/tmp") / f"tmux-{uid}"  # tmux's default socket dir (no TMUX_TMPDIR)
        shutil.rmtree(tmux_dir, ignore_errors=True)

    # keys
    def _start_keygen(self) -> KeyJobs:
        client, sshd = self.lab / "client", self.lab / "sshd"
        client_keys = {name: spec for name, spec in KEY_SPECS.items() if name in LAB_CLIENT_KEYS}
        return start_keygen(client, client_keys) + start_keygen(sshd, HOST_KEY_SPECS)

    def _finish_keys(self, jobs: KeyJobs) -> None:
        self.keys = {name: path for name, path in finish_keygen(jobs).items() if not name.startswith("host")}
        authorized = "".join(
            Path(f"{path}.pub").read_text() for name, path in self.keys.items() if name != "unauthorized"
        )
        ssh_dir = self.home / ".ssh"
        self._mkdirs(ssh_dir)
        os.chmod(ssh_dir, 0o700)
        self._write(ssh_dir / "authorized_keys", authorized.encode(), 0o600)
        self.host_key_line = (self.lab / "sshd" / "host.pub").read_text().split()
        self.host_key_fingerprint = ssh_fingerprint(" ".join(self.host_key_line))
        self._wrong_key_line = (self.lab / "sshd" / "host_wrong.pub").read_text().split()

    # sshd
    def _sshd_config(self) -> str:
        sshd = self.lab / "sshd"
        lines = [
            f"Port {self.port}",
            "ListenAddress 127.0.0.1",
            f"HostKey {sshd / 'host'}",
            f"PidFile {sshd / 'sshd.pid'}",
            f"AllowUsers {self.user}",
            "PermitRootLogin no",
            "AuthenticationMethods publickey",
            "PubkeyAuthentication yes",
            "PasswordAuthentication no",
            "KbdInteractiveAuthentication no",
            "UsePAM no",
            "X11Forwarding no",
            "PrintMotd no",
            "MaxStartups 100:30:200",
            "LogLevel VERBOSE",
            # MaxSessions deliberately left at sshd's default (10): the product must cope.
        ]
        if self.root_mode:
            lines.append("AuthorizedKeysFile .ssh/authorized_keys")
        else:
            # sshd takes HOME from the passwd entry; SetEnv (applied last) overrides it, and a
            # private TMUX_TMPDIR keeps the developer's tmux server out of reach.
            lines += [
                f"AuthorizedKeysFile {self.home / '.ssh' / 'authorized_keys'}",
                "StrictModes no",  # the lab dir may sit under a world-writable /tmp
                f"SetEnv HOME={self.home} TMUX_TMPDIR={self.tmux_tmpdir}",
            ]
        return "\n".join(lines) + "\n"

    def _start_sshd(self) -> None:
        sshd = self.lab / "sshd"
        if self.root_mode:
            # compiled-in privsep dir shared by every sshd on the host: create, never delete
            subprocess.run(["install", "-d", "-m", "755", "/run/sshd"], check=True)
        last_error = ""
        for _attempt in range(5):
            with listening_socket() as sock:
                self.port = sock.getsockname()[1]
            config = sshd / "sshd_config"
            config.write_text(self._sshd_config())
            test = subprocess.run([SSHD, "-t", "-f", str(config)], capture_output=True, text=True)
            if test.returncode != 0:
                raise RuntimeError(f"sshd -t rejected {config}: {test.stderr.strip()}")
            log = sshd / "sshd.log"
            log.write_text("")
            (sshd / "sshd.pid").unlink(missing_ok=True)
            self._proc = subprocess.Popen(
                [SSHD, "-D", "-f", str(config), "-E", str(log)],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
            )
            last_error = self._wait_sshd_ready()
            if not last_error:
                self._write_client_files()
                if self.root_mode:
                    self._write_marker()
                return
            self._stop_sshd()
            self._proc = None
            if "Cannot bind" not in last_error and "Address already in use" not in last_error:
                break
        raise RuntimeError(f"sshd did not start: {last_error}")

    def _wait_sshd_ready(self) -> str:
        """'' once our pid file exists, the log says listening and the port answers SSH."""
        proc = self._proc
        pid_file, deadline = self.lab / "sshd" / "sshd.pid", time.monotonic() + START_TIMEOUT
        listening = f"Server listening on 127.0.0.1 port {self.port}."
        while time.monotonic() < deadline:
            log = self.sshd_log()
            if proc is None or "Cannot bind" in log or proc.poll() is not None:
                return log.strip() or "sshd exited"
            pid = pid_file.read_text().strip() if pid_file.exists() else ""
            if pid == str(proc.pid) and listening in log:
                try:
                    with socket.create_connection((self.host, self.port), timeout=2) as sock:
                        if sock.recv(64).startswith(b"SSH-2.0-"):
                            return ""
                except OSError:
                    pass
            time.sleep(0.01)
        return f"timed out after {START_TIMEOUT}s; log: {self.sshd_log().strip()}"

    def _stop_sshd(self) -> None:
        if self._proc is None:
            return
        pid_file = self.lab / "sshd" / "sshd.pid"
        try:
            pid = int(pid_file.read_text().strip())
        except (OSError, ValueError):
            pid = self._proc.pid
        kill_pids([pid, self._proc.pid], signal.SIGTERM)
        try:
            self._proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait(timeout=5)
        self._proc = None

    # faults: the sshd (and the per-connection sshd processes under it) killed, frozen, restarted
    def sshd_pids(self) -> list[int]:
        """The lab's sshd and every sshd process below it (one or two per open connection), by
        walking /proc from the sshd this lab started: never any other sshd on the machine."""
        if self._proc is None:
            return []
        children: dict[int, list[int]] = {}
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                stat = (entry / "stat").read_text()
            except (OSError, ValueError):
                continue
            # "pid (comm) state ppid …": comm may hold spaces and parentheses, so split after the last ")"
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            children.setdefault(ppid, []).append(int(entry.name))
        found, todo = [], [self._proc.pid]
        while todo:
            pid = todo.pop()
            try:
                comm = Path(f"/proc/{pid}/comm").read_text().strip()
            except OSError:
                continue
            if comm.startswith("sshd") and pid_running(pid):
                found.append(pid)
                todo += children.get(pid, [])
        return found

    def signal_sshd(self, sig: int) -> list[int]:
        """Send `sig` to sshd_pids() (e.g. SIGSTOP, then SIGCONT); the pids signalled."""
        pids = self.sshd_pids()
        kill_pids(pids, sig)
        return pids

    def kill_sshd(self) -> None:
        """SIGKILL the lab's sshd and its per-connection processes, as a crash of the machine's sshd
        would end them: every open connection drops. restart_sshd() brings it back."""
        pids = self.signal_sshd(signal.SIGKILL)
        if self._proc is not None:
            self._proc.wait(timeout=5)
            self._proc = None
        wait_pids_gone(pids, 5.0)

    def restart_sshd(self) -> None:
        """Start sshd again on the same port with the same host key (known_hosts stays valid);
        a running one is stopped first."""
        self._stop_sshd()
        sshd = self.lab / "sshd"
        log = sshd / "sshd.log"
        (sshd / "sshd.pid").unlink(missing_ok=True)
        with log.open("a") as handle:
            handle.write("--- restarted ---\n")
        self._proc = subprocess.Popen(
            [SSHD, "-D", "-f", str(sshd / "sshd_config"), "-E", str(log)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        error = self._wait_sshd_ready()
        if error:
            raise RuntimeError(f"sshd did not restart: {error}")
        if self.root_mode:
            self._write_marker()

    def _write_client_files(self) -> None:
        client = self.lab / "client"
        self.known_hosts = client / "known_hosts"
        self.known_hosts.write_text(self.known_hosts_line() + "\n")
        self.known_hosts_wrong = client / "known_hosts_wrong"
        self.known_hosts_wrong.write_text(
            f"[{self.host}]:{self.port} {self._wrong_key_line[0]} {self._wrong_key_line[1]}\n"
        )
        self.ssh_alias = "rc-lab"
        self.ssh_config = client / "ssh_config"
        self.ssh_config.write_text(
            f"Host {self.ssh_alias}\n  HostName {self.host}\n  Port {self.port}\n"
            f"  User {self.user}\n  IdentityFile {self.keys['ed25519']}\n  IdentitiesOnly yes\n"
            f"  UserKnownHostsFile {self.known_hosts}\n  GlobalKnownHostsFile /dev/null\n"
            "  StrictHostKeyChecking yes\n  BatchMode yes\n  LogLevel ERROR\n"
        )

    # inspection
    def known_hosts_line(self) -> str:
        """'[127.0.0.1]:PORT ssh-ed25519 AAAA…' (bracket form: the port is not 22)."""
        return f"[{self.host}]:{self.port} {self.host_key_line[0]} {self.host_key_line[1]}"

    def sshd_log(self) -> str:
        try:
            return (self.lab / "sshd" / "sshd.log").read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def accepted_logins(self) -> int:
        return self.sshd_log().count("Accepted publickey")
