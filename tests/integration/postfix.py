"""A private Postfix 3.7 instance as a next hop for tests, entirely in a
temp dir.

    from postfix import Postfix
    if not Postfix.available():
        print(f"SKIP: {Postfix.unavailable_reason()}")
        sys.exit(harness.SKIP)
    with Postfix(users=["alice"], relayhost=f"[127.0.0.1]:{sink}") as pf:
        smtplib.SMTP("127.0.0.1", pf.port)     # Postfix's smtpd
        ...
        pf.maildir_messages("alice")   # [bytes, ...] from new/ and cur/
        pf.log()                       # Postfix's maillog
        pf.queue_files()               # queue files not yet delivered
    # stopped, no process left, temp dir removed

What it accepts: mail for <user>@<domain> (default pfx.test) for the
listed users only, delivered by virtual(8) to the Maildir
<tmp>/mail/<domain>/<user>/; any other user of that domain gets
"550 5.1.1 ... User unknown in virtual mailbox table" at RCPT, any other
domain "554 5.7.1 Relay access denied". The domain is a virtual mailbox
domain rather than a mydestination entry: Postfix refuses a domain in
both, and virtual(8) delivers to a Maildir path with a static uid, which
local(8) would not.

What it sends: only its own reports (DSNs, e.g. for NOTIFY=SUCCESS), and
only to relayhost, which must be [127.0.0.1]:PORT; without one every
outbound message fails at once through the error transport (and
notify_classes is empty, so no postmaster notices either). DNS is off
(smtp_dns_support_level = disabled, no peer name lookups), the smtp client
binds to 127.0.0.1, smtpd listens on 127.0.0.1:<free port> only.

Files: <tmp>/etc (main.cf, master.cf; config_directory), <tmp>/queue,
<tmp>/data (owned by postfix), <tmp>/mail (owned by the mail user),
<tmp>/maillog (maillog_file, written by the postlog service: no syslog).

Identity: the postfix(1) command is reserved for root and the daemons
drop to mail_owner = postfix, so this needs root (CI runs as root) and
Debian's postfix user and postdrop group; available() says False
otherwise and the test skips. Mail is delivered as nobody (virtual(8)
refuses uids below virtual_minimum_uid, so never as root).

Timing: retries and queue runs every 2-4 s instead of minutes, and no
in_flow_delay, so a test never waits on Postfix's production pacing.
`extra` main.cf lines replace the generated parameter of the same name.

Processes: `postfix -c <tmp>/etc start-fg` runs in a child process (its
own session); the master it starts makes itself a session leader, so its
pid (queue/pid/master.pid) is also the process group of every Postfix
daemon. stop() runs `postfix -c ... stop`, waits a bounded time, then
SIGKILLs both groups and waits until nothing of them runs. Instances still
running at exit are stopped (atexit), and a small guard process, which
waits for EOF on a pipe only this process holds, does the same if the test
process dies without running atexit (SIGKILL). Every wait is bounded.
"""

import grp
import os
import pwd
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402  (free_port)
import procgroup  # noqa: E402

POSTFIX = "/usr/sbin/postfix"
MASTER = "/usr/lib/postfix/sbin/master"
QUEUES = ("maildrop", "incoming", "active", "deferred", "hold", "corrupt")

# master.cf services besides smtpd: (name, type, private, unprivileged,
# wakeup, process limit, command), all without chroot. virtual(8) runs
# as root to switch to the mail user, as in the stock master.cf.
SERVICES = [
    ("pickup", "unix", "n", "-", "60", "1", "pickup"),
    ("cleanup", "unix", "n", "-", "-", "0", "cleanup"),
    ("qmgr", "unix", "n", "-", "300", "1", "qmgr"),
    ("rewrite", "unix", "-", "-", "-", "-", "trivial-rewrite"),
    ("bounce", "unix", "-", "-", "-", "0", "bounce"),
    ("defer", "unix", "-", "-", "-", "0", "bounce"),
    ("trace", "unix", "-", "-", "-", "0", "bounce"),
    ("verify", "unix", "-", "-", "-", "1", "verify"),
    ("flush", "unix", "n", "-", "1000?", "0", "flush"),
    ("proxymap", "unix", "-", "-", "-", "-", "proxymap"),
    ("smtp", "unix", "-", "-", "-", "-", "smtp"),
    ("relay", "unix", "-", "-", "-", "-", "smtp"),
    ("virtual", "unix", "-", "n", "-", "-", "virtual"),
    ("showq", "unix", "n", "-", "-", "-", "showq"),
    ("error", "unix", "-", "-", "-", "-", "error"),
    ("retry", "unix", "-", "-", "-", "-", "error"),
    ("discard", "unix", "-", "-", "-", "-", "discard"),
    ("anvil", "unix", "-", "-", "-", "1", "anvil"),
    ("scache", "unix", "-", "-", "-", "1", "scache"),
    ("postlog", "unix-dgram", "n", "-", "-", "1", "postlogd"),
]

# The guard: started with a pipe on stdin that only the test process holds
# open. EOF means that process is gone (or stop() let go of it after doing
# the work itself and killed the guard first). It then stops the instance
# the same way stop() does, each step bounded.
_GUARD = r"""
import os, signal, subprocess, sys, time
postfix, etc, pidfile = sys.argv[1:4]
pgid = int(sys.argv[4])
sys.stdin.buffer.read()
groups = [pgid]
try:
    master = int(open(pidfile).read().split()[0])
    if b"master" in open(f"/proc/{master}/cmdline", "rb").read():
        groups.append(master)
except Exception:
    pass
try:
    subprocess.run([postfix, "-c", etc, "stop"], timeout=15,
                   stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)
except Exception:
    pass
time.sleep(1)
for g in groups:
    try:
        os.killpg(g, signal.SIGKILL)
    except Exception:
        pass
"""


class Postfix(procgroup.Server):
    """One private Postfix instance whose smtpd listens on a loopback port."""

    @staticmethod
    def unavailable_reason():
        """Why this machine cannot run the instance, or None."""
        if not (os.access(POSTFIX, os.X_OK) and os.access(MASTER, os.X_OK)):
            return "Postfix is not installed (setup.sh)"
        if os.geteuid() != 0:
            return "a private Postfix instance needs root (postfix(1) is " \
                   "reserved for the superuser)"
        try:
            pwd.getpwnam("postfix")
            grp.getgrnam("postdrop")
        except KeyError:
            return "no 'postfix' user or 'postdrop' group"
        return None

    @staticmethod
    def available():
        return Postfix.unavailable_reason() is None

    def __init__(self, users=("alice", "bob"), domain="pfx.test",
                 relayhost=None, hostname="postfix.pfx.test", extra=""):
        """users: local parts that exist at domain. relayhost: where
        Postfix sends its own reports, "[127.0.0.1]:PORT" (loopback only),
        or None (they fail at once). extra: main.cf lines, each replacing
        the generated parameter of its name or appended."""
        for u in users:
            if not re.fullmatch(r"[a-z0-9][a-z0-9._-]*", u):
                raise ValueError(f"user {u!r}: lower-case local part only")
        if not re.fullmatch(r"[a-z0-9][a-z0-9.-]*", domain.lower()):
            raise ValueError(f"domain {domain!r}: a plain domain name only")
        if relayhost is not None and \
                not re.fullmatch(r"\[127\.0\.0\.1\]:\d+", relayhost):
            raise ValueError(f"relayhost {relayhost!r}: must be "
                             "[127.0.0.1]:PORT (loopback only)")
        self.tmp = tempfile.mkdtemp(prefix="postseal-postfix-")
        # Postfix daemons (user postfix) and the mail user must traverse it.
        os.chmod(self.tmp, 0o755)
        self.users = list(users)
        self.domain = domain.lower()
        self.relayhost = relayhost
        self.hostname = hostname
        self.extra = extra
        self.port = harness.free_port()
        self.etc = os.path.join(self.tmp, "etc")
        self.queue_dir = os.path.join(self.tmp, "queue")
        self.data_dir = os.path.join(self.tmp, "data")
        self.mail_base = os.path.join(self.tmp, "mail")
        self.maillog = os.path.join(self.tmp, "maillog")
        self.stdout_path = os.path.join(self.tmp, "postfix-stdout.log")
        self.pidfile = os.path.join(self.queue_dir, "pid", "master.pid")
        self.proc = None
        self.guard = None
        self.master_pid = None
        self._out = None
        nobody = pwd.getpwnam("nobody")
        self.mail_uid, self.mail_gid = nobody.pw_uid, nobody.pw_gid
        try:
            pf = pwd.getpwnam("postfix")
            for d in (self.etc, self.queue_dir, self.data_dir,
                      self.mail_base):
                os.makedirs(d, mode=0o755)
            os.chown(self.data_dir, pf.pw_uid, pf.pw_gid)
            os.chown(self.mail_base, self.mail_uid, self.mail_gid)
            self._write_config()
        except BaseException:  # e.g. not root: no temp dir left behind
            shutil.rmtree(self.tmp, ignore_errors=True)
            raise

    # ---- configuration ----------------------------------------------------

    def _main_cf(self):
        if self.relayhost:
            out = ("relayhost = " + self.relayhost + "\n"
                   "default_transport = smtp\nrelay_transport = smtp\n")
        else:
            out = ("relayhost =\n"
                   "default_transport = error:5.7.1 this test instance "
                   "sends no mail\n"
                   "relay_transport = $default_transport\n")
        mailboxes = ", ".join(f"{u}@{self.domain}={self.domain}/{u}/"
                              for u in self.users)
        return (
            "# Written by tests/integration/postfix.py: a private instance,\n"
            "# loopback only, final destination for one test domain; its own\n"
            "# reports go to relayhost (a loopback test sink) or fail.\n"
            "compatibility_level = 3.6\n"
            f"queue_directory = {self.queue_dir}\n"
            f"data_directory = {self.data_dir}\n"
            "mail_owner = postfix\n"
            "setgid_group = postdrop\n"
            f"myhostname = {self.hostname}\n"
            f"mydomain = {self.domain}\n"
            "myorigin = $myhostname\n"
            "mydestination =\n"
            "local_recipient_maps =\n"
            "local_transport = error:5.1.1 no local delivery here\n"
            "alias_maps =\n"
            "alias_database =\n"
            "relay_domains =\n"
            "inet_interfaces = 127.0.0.1\n"
            "inet_protocols = ipv4\n"
            "mynetworks = 127.0.0.0/8\n"
            # Nobody relays through it: only its own domain is accepted.
            "smtpd_relay_restrictions = reject_unauth_destination\n"
            + out +
            "transport_maps =\n"
            "sender_dependent_relayhost_maps =\n"
            "sender_dependent_default_transport_maps =\n"
            "smtp_fallback_relay =\n"
            "smtp_bind_address = 127.0.0.1\n"
            "smtp_dns_support_level = disabled\n"
            "lmtp_dns_support_level = disabled\n"
            "smtpd_peername_lookup = no\n"
            f"virtual_mailbox_domains = {self.domain}\n"
            f"virtual_mailbox_base = {self.mail_base}\n"
            f"virtual_mailbox_maps = inline:{{ {mailboxes} }}\n"
            f"virtual_uid_maps = static:{self.mail_uid}\n"
            f"virtual_gid_maps = static:{self.mail_gid}\n"
            "virtual_transport = virtual\n"
            # No postmaster notices; reports to senders still go out.
            "notify_classes =\n"
            "delay_warning_time = 0h\n"
            # A test never waits for Postfix's default minutes of backoff.
            "queue_run_delay = 2s\n"
            "minimal_backoff_time = 2s\n"
            "maximal_backoff_time = 4s\n"
            "in_flow_delay = 0\n"
            f"maillog_file = {self.maillog}\n"
            f"maillog_file_prefixes = {self.tmp}\n"
            "biff = no\n")

    def _with_extra(self, text):
        """main.cf text with the extra lines: one that sets a parameter
        already set replaces that line (Postfix warns about a parameter set
        twice); the others are appended."""
        lines = text.splitlines()
        names = [_param(line) for line in lines]
        for line in self.extra.splitlines():
            name = _param(line)
            if name is not None and name in names:
                lines[names.index(name)] = line
            else:
                lines.append(line)
                names.append(name)
        return "\n".join(lines) + "\n"

    def _master_cf(self):
        """smtpd on the loopback port only, no chroot, and the daemons
        that delivery, reports and maillog_file need."""
        rows = [f"127.0.0.1:{self.port} inet n - n - - smtpd"]
        rows += [f"{name:<9} {kind:<10} {private} {unpriv} n {wakeup:<5} "
                 f"{limit:<2} {command}"
                 for name, kind, private, unpriv, wakeup, limit, command
                 in SERVICES]
        return "\n".join(rows) + "\n"

    def _write_config(self):
        for name, text in (("main.cf", self._with_extra(self._main_cf())),
                           ("master.cf", self._master_cf())):
            with open(os.path.join(self.etc, name), "w") as f:
                f.write(text)

    # ---- life cycle -------------------------------------------------------

    def start(self, timeout=30.0, attempts=3):
        """Starts Postfix; returns once its smtpd greets on .port. Another
        process may take the free port before the master binds it: then
        it retries on a new one. Raises RuntimeError if it does not come
        up (nothing is left running)."""
        for attempt in range(attempts):
            if self._start_once(timeout):
                return self
            taken = self._port_taken()
            self.stop()
            if not taken or attempt == attempts - 1:
                raise RuntimeError("postfix did not start serving SMTP on "
                                   f"port {self.port}:\n{self.log_tail()}"
                                   f"{self._check_output()}")
            self.port = harness.free_port()
            self._write_config()
        return self

    def _start_once(self, timeout):
        self._out = open(self.stdout_path, "ab")
        self.proc = subprocess.Popen(
            [POSTFIX, "-c", self.etc, "start-fg"], stdin=subprocess.DEVNULL,
            stdout=self._out, stderr=subprocess.STDOUT,
            start_new_session=True)
        procgroup.track(self)
        self.guard = subprocess.Popen(
            [sys.executable, "-c", _GUARD, POSTFIX, self.etc, self.pidfile,
             str(self.proc.pid)], stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return False
            if self.master_pid is None:
                self.master_pid = self._read_master_pid()
            if self.master_pid is not None and self._greets():
                return True
            time.sleep(0.05)
        return False

    def _check_output(self):
        """What `postfix check` says about the configuration. postfix(1)
        prints its errors only to a terminal (else to the maillog, which
        a bad main.cf may never reach): script(1) gives it one."""
        if not shutil.which("script"):
            return ""
        try:
            r = subprocess.run(
                ["script", "-qec", f"{POSTFIX} -c {self.etc} check",
                 "/dev/null"], stdin=subprocess.DEVNULL, capture_output=True,
                text=True, timeout=30)
        except subprocess.TimeoutExpired:
            return "---- postfix check: timed out ----\n"
        return f"---- postfix check ----\n{r.stdout[-2000:]}"

    def _read_master_pid(self):
        try:
            with open(self.pidfile) as f:
                pid = int(f.read().split()[0])
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                return pid if b"master" in f.read() else None
        except (OSError, ValueError, IndexError):
            return None

    def _greets(self):
        try:
            with socket.create_connection(("127.0.0.1", self.port),
                                          timeout=1.0) as s:
                s.settimeout(2.0)
                if s.recv(512).startswith(b"220"):
                    s.sendall(b"QUIT\r\n")
                    return True
        except OSError:
            pass
        return False

    def _port_taken(self):
        """True if something else holds our port (a start-up race)."""
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            s.bind(("127.0.0.1", self.port))
            return False
        except OSError:
            return True
        finally:
            s.close()

    def stop(self, timeout=15.0):
        """`postfix stop`, a bounded wait, then SIGKILL for whatever is
        left of the master's and the start-fg process's groups; returns
        once none of them runs. Idempotent."""
        if self.proc is None:
            return None
        if self.guard is not None:  # we do its work now
            self.guard.kill()
            self.guard.wait()
            self.guard.stdin.close()
            self.guard = None
        master = self.master_pid or self._read_master_pid()
        if self.proc.poll() is None or (master and procgroup.group_members(master)):
            try:
                subprocess.run([POSTFIX, "-c", self.etc, "stop"],
                               stdin=subprocess.DEVNULL,
                               stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, timeout=timeout)
            except subprocess.TimeoutExpired:
                pass
        try:
            rc = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            rc = None
        # Daemons follow the master within moments; the rest is killed.
        deadline = time.monotonic() + 3.0
        while master and procgroup.group_members(master) and \
                time.monotonic() < deadline:
            time.sleep(0.05)
        procgroup.kill_group(master, timeout)
        procgroup.kill_group(self.proc.pid, timeout)
        if rc is None:
            rc = self.proc.wait(timeout=timeout)
        self.proc = None
        self.master_pid = None
        if self._out is not None:
            self._out.close()
            self._out = None
        procgroup.untrack(self)
        return rc

    def running_pids(self):
        """Pids of this instance's processes (start-fg, master, daemons)."""
        if self.proc is None:
            return []
        pids = procgroup.group_members(self.proc.pid)
        if self.master_pid:
            pids += procgroup.group_members(self.master_pid)
        return sorted(set(pids))

    # ---- mail, queue and logs ---------------------------------------------

    def maildir(self, user):
        return os.path.join(self.mail_base, self.domain, user.lower())

    def maildir_messages(self, user):
        """Contents (bytes) of the user's messages in new/ and cur/,
        oldest first (by the <sec>.V..M<usec> names virtual(8) writes)."""
        out = []
        for sub in ("new", "cur"):
            d = os.path.join(self.maildir(user), sub)
            try:
                names = os.listdir(d)
            except OSError:
                continue
            for name in names:
                try:
                    with open(os.path.join(d, name), "rb") as f:
                        out.append((_delivery_time(name), name, f.read()))
                except OSError:  # moved from new/ to cur/ meanwhile
                    continue
        return [data for _, _, data in sorted(out)]

    def queue_files(self):
        """Paths of the messages still in Postfix's queues."""
        found = []
        for q in QUEUES:
            for root, _, files in os.walk(os.path.join(self.queue_dir, q)):
                found.extend(os.path.join(root, f) for f in files)
        return found

    def log(self):
        """The maillog (and anything start-fg printed)."""
        return procgroup.read_text(self.stdout_path, self.maillog)

    # Postfix's cleanup compares file times with its own clock and warns
    # when the file system's runs ahead (coarse timestamps on a busy
    # machine); that is about this machine, not about the mail.
    BENIGN = re.compile(r"warning: (file system clock is \d+ seconds? ahead "
                        r"of local clock|resetting file time stamps)")

    def log_problems(self):
        """The log's warning/error/fatal/panic lines (a clean run has none),
        but for the clock warnings in BENIGN."""
        return [line for line in self.log().splitlines()
                if re.search(r"\]: (warning|error|fatal|panic): ", line)
                and not self.BENIGN.search(line)]

    def log_tail(self, lines=40):
        tail = self.log().splitlines()[-lines:]
        return "---- postfix log (tail) ----\n" + "\n".join(tail) + "\n"


def _param(line):
    """The parameter a main.cf line sets; None for a comment, a blank or a
    continuation line."""
    if "=" not in line or line[:1].isspace() or line.startswith("#"):
        return None
    return line.split("=", 1)[0].strip()


def _delivery_time(name):
    """(sec, usec) from a Maildir name "<sec>.V<dev>I<ino>M<usec>.host"."""
    m = re.match(r"(\d+)\.\S*?M(\d+)", name)
    return (int(m.group(1)), int(m.group(2))) if m else (0, 0)
