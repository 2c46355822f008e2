"""Debian's Dovecot as an LMTP server for tests, entirely in a temp dir.

    from dovecot import Dovecot
    if not Dovecot.available():
        sys.exit(harness.SKIP)
    with Dovecot(users=["bob@r.example"]) as d:      # started, port answers
        lmtp = smtplib.LMTP("127.0.0.1", d.port)
        ...
        d.messages("bob", "r.example")   # [bytes, ...] from new/ and cur/
        d.maildir("bob", "r.example")    # the Maildir's path
    # stopped, no process left, temp dir removed

users: None accepts every address (static userdb, allow_all_users); a list
of "user@domain" makes only those exist, so any other recipient gets
"550 5.1.1 ... User doesn't exist" at RCPT (a static userdb checks
existence through the passdb, here a passwd-file of those users).
Mail for user@domain lands in <tmp>/mail/<domain>/<user>/Maildir (both
lowercased), written by Dovecot's lmtp as the mail user.

Identity: Dovecot refuses uid 0 for mail (“userdb returned 0 as uid”), so
as root (CI) the master runs as root with Debian's dovecot/dovenull as its
internal/login users and delivers as nobody; as any other user everything
runs as that user. Either way the configuration sets first_valid_uid,
mail_uid/mail_gid, default_internal_user, default_login_user to match.

Processes: the master runs in its own session (process group) with a
parent-death signal, so it goes if the test process dies; stop() sends
SIGTERM, waits, then SIGKILLs whatever is left of the group and waits
until nothing of it runs. Listeners are on 127.0.0.1 only; every wait is
bounded.
"""

import ctypes
import grp
import os
import pwd
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402  (free_port)
import procgroup  # noqa: E402

DOVECOT = "/usr/sbin/dovecot"
LMTP_BIN = "/usr/lib/dovecot/lmtp"

def _pdeathsig():
    """In the child before exec: SIGTERM when the test process dies."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _user_exists(name):
    try:
        pwd.getpwnam(name)
        return True
    except KeyError:
        return False


def _identity():
    """(internal user, login user, mail uid, mail gid) for this process."""
    if os.geteuid() != 0:
        me = pwd.getpwuid(os.geteuid()).pw_name
        return me, me, os.geteuid(), os.getegid()
    nobody = pwd.getpwnam("nobody")
    internal = "dovecot" if _user_exists("dovecot") else "nobody"
    login = "dovenull" if _user_exists("dovenull") else "nobody"
    return internal, login, nobody.pw_uid, nobody.pw_gid


def _delivery_time(name):
    """(sec, usec) from a Maildir name "<sec>.M<usec>...", else (0, 0)."""
    m = re.match(r"(\d+)\.M(\d+)", name)
    return (int(m.group(1)), int(m.group(2))) if m else (0, 0)


class Dovecot(procgroup.Server):
    """One Dovecot master serving LMTP on a free loopback port."""

    @staticmethod
    def available():
        return os.access(DOVECOT, os.X_OK) and os.access(LMTP_BIN, os.X_OK)

    def __init__(self, users=None, hostname="lmtp.test", extra=""):
        self.tmp = tempfile.mkdtemp(prefix="postseal-dovecot-")
        # Dovecot's unprivileged processes (and the mail user) must reach
        # their sockets and the mail under it when we run as root.
        os.chmod(self.tmp, 0o755)
        self.port = harness.free_port()
        self.hostname = hostname
        self.users = None if users is None else [u.lower() for u in users]
        self.base_dir = os.path.join(self.tmp, "run")
        self.state_dir = os.path.join(self.tmp, "state")
        self.mail_root = os.path.join(self.tmp, "mail")
        self.log_path = os.path.join(self.tmp, "dovecot.log")
        self.info_log_path = os.path.join(self.tmp, "dovecot-info.log")
        self.stdout_path = os.path.join(self.tmp, "dovecot-stdout.log")
        self.config_path = os.path.join(self.tmp, "dovecot.conf")
        self.passwd_path = os.path.join(self.tmp, "users")
        self.proc = None
        self._out = None
        internal, login, self.mail_uid, self.mail_gid = _identity()
        os.makedirs(self.state_dir, mode=0o755)
        os.makedirs(self.mail_root, mode=0o700)
        if os.geteuid() == 0:
            os.chown(self.mail_root, self.mail_uid, self.mail_gid)
        with open(self.config_path, "w") as f:
            f.write(self._config(internal, login, extra))
        if self.users is not None:
            with open(self.passwd_path, "w") as f:
                f.write("".join(f"{u}:{{PLAIN}}unused\n" for u in self.users))
            os.chmod(self.passwd_path, 0o644)

    def _config(self, internal, login, extra):
        if self.users is None:
            passdb = "  driver = static\n  args = nopassword=y\n"
            allow = " allow_all_users=yes"
        else:
            passdb = ("  driver = passwd-file\n"
                      f"  args = username_format=%Lu {self.passwd_path}\n")
            allow = ""
        internal_group = grp.getgrgid(pwd.getpwnam(internal).pw_gid).gr_name
        return (
            "# Written by tests/integration/dovecot.py; loopback LMTP only.\n"
            "protocols = lmtp\n"
            f"base_dir = {self.base_dir}\n"
            f"state_dir = {self.state_dir}\n"
            f"log_path = {self.log_path}\n"
            f"info_log_path = {self.info_log_path}\n"
            f"debug_log_path = {self.info_log_path}\n"
            "ssl = no\n"
            "listen = 127.0.0.1\n"
            f"hostname = {self.hostname}\n"
            f"postmaster_address = postmaster@{self.hostname}\n"
            f"first_valid_uid = {self.mail_uid}\n"
            f"mail_uid = {self.mail_uid}\n"
            f"mail_gid = {self.mail_gid}\n"
            f"default_internal_user = {internal}\n"
            f"default_internal_group = {internal_group}\n"
            f"default_login_user = {login}\n"
            "mail_location = maildir:~/Maildir\n"
            "passdb {\n" + passdb + "}\n"
            "userdb {\n"
            "  driver = static\n"
            f"  args = uid={self.mail_uid} gid={self.mail_gid} "
            f"home={self.mail_root}/%Ld/%Ln{allow}\n"
            "}\n"
            # anvil chroots by default, which only root may do
            "service anvil {\n  chroot =\n}\n"
            "service lmtp {\n"
            "  inet_listener lmtp {\n"
            "    address = 127.0.0.1\n"
            f"    port = {self.port}\n"
            "  }\n"
            "}\n" + extra)

    # ---- life cycle -------------------------------------------------------

    def start(self, timeout=20.0):
        """Starts `dovecot -F -c conf`; returns once the LMTP port greets.
        Raises RuntimeError (the master stopped again) if it does not."""
        self._out = open(self.stdout_path, "ab")
        self.proc = subprocess.Popen(
            [DOVECOT, "-F", "-c", self.config_path], stdin=subprocess.DEVNULL,
            stdout=self._out, stderr=subprocess.STDOUT,
            start_new_session=True, preexec_fn=_pdeathsig)
        procgroup.track(self)
        if not self._wait_greeting(timeout):
            self.stop()
            raise RuntimeError("dovecot did not start serving LMTP on port "
                               f"{self.port}:\n{self.log_tail()}")
        return self

    def _wait_greeting(self, timeout):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return False
            try:
                with socket.create_connection(("127.0.0.1", self.port),
                                              timeout=1.0) as s:
                    s.settimeout(max(0.5, deadline - time.monotonic()))
                    if s.recv(512).startswith(b"220"):
                        s.sendall(b"QUIT\r\n")
                        return True
            except OSError:
                pass
            time.sleep(0.05)
        return False

    def stop(self, timeout=10.0):
        """SIGTERM, bounded wait, then SIGKILL for whatever is left of the
        process group; returns once none of it runs. Idempotent."""
        if self.proc is None:
            return None
        pgid = self.proc.pid  # start_new_session: its own group
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            rc = self.proc.wait()
        # Children (lmtp, auth, log...) follow the master on their own;
        # whatever has not within a grace period is killed, and waited
        # for, by group.
        if not procgroup.wait_group_gone(pgid, min(timeout, 3.0)):
            procgroup.kill_group(pgid, timeout)
        self.proc = None
        if self._out is not None:
            self._out.close()
            self._out = None
        procgroup.untrack(self)
        return rc

    def running_pids(self):
        """Pids of this instance's processes (master and children)."""
        return [] if self.proc is None else procgroup.group_members(self.proc.pid)

    # ---- mail and logs ----------------------------------------------------

    def maildir(self, user, domain):
        return os.path.join(self.mail_root, domain.lower(), user.lower(),
                            "Maildir")

    def messages(self, user, domain):
        """Contents (bytes) of the messages in new/ and cur/, oldest first
        (by the <sec>.M<usec> the names start with)."""
        out = []
        for sub in ("new", "cur"):
            d = os.path.join(self.maildir(user, domain), sub)
            if not os.path.isdir(d):
                continue
            for name in os.listdir(d):
                with open(os.path.join(d, name), "rb") as f:
                    out.append((_delivery_time(name), name, f.read()))
        return [data for _, _, data in sorted(out)]

    def log(self):
        return procgroup.read_text(self.stdout_path, self.log_path, self.info_log_path)

    def log_errors(self):
        """The log's Error/Fatal/Panic lines (a clean run has none)."""
        return [line for line in self.log().splitlines()
                if any(m in line for m in (": Error: ", ": Fatal: ",
                                           ": Panic: "))]

    def log_tail(self, lines=40):
        tail = self.log().splitlines()[-lines:]
        return "---- dovecot log (tail) ----\n" + "\n".join(tail) + "\n"
