"""STARTTLS, implicit TLS and AUTH against real clients: Python's ssl and
smtplib, swaks, `openssl s_client`. Certificates and password hashes are
made at test time (openssl, mkpasswd). Covers the attacks of RFC 3207 /
CVE-2011-0411 (commands pipelined after STARTTLS), AUTH before TLS,
password guessing (limited, never logged), bad base64, handshake garbage
and a stalled handshake."""

import base64
import os
import shutil
import signal
import smtplib
import socket
import ssl
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import (SKIP, Conn, Daemon, check, metric_value,  # noqa: E402
                     run_tests, wait_until)
from tlsutil import Pki, have_tools, mkpasswd  # noqa: E402

PASSWORD = "correct horse battery staple"


class Setup:
    """A PKI, a server certificate for 127.0.0.1 / mx.test.example, and a
    password file with alice (yescrypt) and bob (sha512-crypt)."""

    def __init__(self, tmp):
        self.pki = Pki(os.path.join(tmp, "pki"))
        self.cert, self.key = self.pki.leaf(
            "server", ["mx.test.example", "localhost"], ips=["127.0.0.1"])
        self.passwd = os.path.join(tmp, "passwd")
        with open(self.passwd, "w") as f:
            f.write("# test users\n")
            f.write(f"alice@example.org:{mkpasswd(PASSWORD)}:"
                    "alias@example.org,@alice.example\n")
            f.write(f"bob:{mkpasswd('hunter2', 'sha-512')}:bob@example.net\n")

    def yaml(self, extra=""):
        return (f"tls:\n  cert_file: {self.cert}\n  key_file: {self.key}\n"
                f"auth:\n  passwd_file: {self.passwd}\n  max_failures: 3\n"
                "local_domains: [example.net]\n" + extra)


SETUP = None


def _cleanup():
    if SETUP is not None:
        shutil.rmtree(os.path.dirname(SETUP.passwd), ignore_errors=True)


def setup():
    global SETUP
    if SETUP is None:
        import tempfile
        SETUP = Setup(tempfile.mkdtemp(prefix="postseal-tls-"))
    return SETUP


def client_ctx():
    return setup().pki.client_context()


def test_starttls_relay_port():
    st = setup()
    with Daemon(st.yaml()) as d:
        with smtplib.SMTP("127.0.0.1", d.smtp_port, timeout=10) as s:
            s.ehlo("client.test")
            check(s.has_extn("starttls"), "STARTTLS offered on port 25")
            check(not s.has_extn("auth"), "no AUTH on the relay port")
            code, _ = s.starttls(context=client_ctx())
            check(code == 220, f"STARTTLS 220: {code}")
            check(s.sock.version() in ("TLSv1.2", "TLSv1.3"),
                  f"TLS version {s.sock.version()}")
            s.ehlo("client.test")
            check(not s.has_extn("starttls"), "no STARTTLS inside TLS")
            s.sendmail("a@example.org", ["user@example.net"],
                       b"Subject: over tls\r\n\r\nsecret\r\n")
        path = os.path.join(d.tmp, "mail", "example.net", "user", "new")
        check(wait_until(lambda: os.path.isdir(path) and os.listdir(path), 10),
              "delivered to the Maildir")
        with open(os.path.join(path, os.listdir(path)[0]), "rb") as f:
            data = f.read()
        check(b"with ESMTPS id" in data, f"ESMTPS in Received: {data[:400]!r}")
        check(b"(using TLSv1.3 with cipher TLS_" in data,
              f"TLS facts in Received: {data[:400]!r}")
        m = d.metrics()
        v = metric_value(
            m, 'postseal_tls_handshakes_total{direction="inbound",'
               'result="full"}')
        check(v == 1, f"one inbound handshake counted: {v}")


def test_starttls_injection_discarded():
    """Commands pipelined after STARTTLS in the same packet must never run
    (CVE-2011-0411): after the handshake the MAIL is unknown."""
    st = setup()
    with Daemon(st.yaml()) as d:
        c = Conn(d.smtp_port)
        c.cmd("EHLO client.test")
        c.send("STARTTLS\r\nMAIL FROM:<evil@example.org>\r\n")
        code, lines = c.reply()
        check(code == 220, f"220 to STARTTLS: {lines}")
        check(c.buf == b"", f"nothing after the 220 in plaintext: {c.buf!r}")
        tls = client_ctx().wrap_socket(c.s, server_hostname="mx.test.example")
        f = tls.makefile("rwb")
        f.write(b"EHLO client.test\r\n")
        f.flush()
        while True:
            line = f.readline()
            if line[3:4] == b" ":
                break
        f.write(b"RCPT TO:<user@example.net>\r\n")
        f.flush()
        line = f.readline()
        check(line.startswith(b"503"),
              f"no MAIL ran: RCPT gets 503, got {line!r}")
        tls.close()
        check(wait_until(lambda: "starttls_discard" in d.read_log(), 5),
              "the discarded bytes are logged")


def test_submission_requires_tls_and_auth():
    st = setup()
    with Daemon(st.yaml()) as d:
        c = Conn(d.submission_port)
        code, lines = c.cmd("EHLO client.test")
        text = "\n".join(lines)
        check("STARTTLS" in text and "AUTH" not in text,
              f"STARTTLS but no AUTH before TLS: {lines}")
        auth = base64.b64encode(b"\0bob\0hunter2").decode()
        code, lines = c.cmd(f"AUTH PLAIN {auth}")
        check(code == 530 and "STARTTLS" in lines[0],
              f"AUTH before TLS: 530 (STARTTLS first), got {lines}")
        code, lines = c.cmd("MAIL FROM:<bob@example.org>")
        check(code == 530, f"MAIL before TLS: 530, got {lines}")
        c.close()
        # Inside TLS but without AUTH: still 530.
        with smtplib.SMTP("127.0.0.1", d.submission_port, timeout=10) as s:
            s.starttls(context=client_ctx())
            s.ehlo("client.test")
            check(s.has_extn("auth"), "AUTH offered inside TLS")
            check("PLAIN" in s.esmtp_features["auth"] and
                  "LOGIN" in s.esmtp_features["auth"], "PLAIN and LOGIN")
            code, msg = s.docmd("MAIL", "FROM:<bob@example.org>")
            check(code == 530, f"MAIL without AUTH: 530, got {code} {msg!r}")


def test_submission_auth_relays():
    """An authenticated user relays to any domain, even from a client
    outside mynetworks, but only with its own sender addresses."""
    st = setup()
    with Daemon(st.yaml(), mynetworks=["192.0.2.0/24"]) as d:
        with smtplib.SMTP("127.0.0.1", d.submission_port, timeout=10) as s:
            s.starttls(context=client_ctx())
            s.login("alice@example.org", PASSWORD)  # PLAIN, smtplib's pick
            s.sendmail("alias@example.org", ["someone@far.example"],
                       b"Subject: relay\r\n\r\nhi\r\n")
            s.sendmail("x@alice.example", ["someone@far.example"],
                       b"Subject: relay 2\r\n\r\nhi\r\n")
            try:
                s.sendmail("bob@example.org", ["someone@far.example"],
                           b"Subject: forged\r\n\r\nhi\r\n")
                check(False, "another user's sender must be refused")
            except smtplib.SMTPSenderRefused as e:
                check(e.smtp_code == 553, f"553 for a foreign sender: {e}")
        q = d.queue()
        check(len(q) == 2, f"two relayed messages queued: {q}")
        # The same from port 25 without AUTH is refused (no open relay).
        with smtplib.SMTP("127.0.0.1", d.smtp_port, timeout=10) as s:
            try:
                s.sendmail("a@example.org", ["someone@far.example"], b"x\r\n")
                check(False, "unauthenticated relay must be refused")
            except smtplib.SMTPRecipientsRefused:
                pass
        log = d.read_log()
        check("result=success" in log and "user=alice@example.org" in log,
              "auth success logged with the user")
        check(PASSWORD not in log, "the password never reaches the log")


def test_auth_login_swaks():
    check(shutil.which("swaks") is not None,
          "swaks is installed (scripts/setup.sh)")
    st = setup()
    with Daemon(st.yaml()) as d:
        out = subprocess.run(
            ["swaks", "--server", f"127.0.0.1:{d.submission_port}",
             "--tls", "--tls-ca-path", st.pki.ca_cert, "--tls-verify",
             "--auth", "LOGIN", "--auth-user", "bob",
             "--auth-password", "hunter2", "--from", "bob@example.net",
             "--to", "user@example.net", "--timeout", "20"],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=60)
        text = out.stdout.decode("utf-8", "replace")
        check(out.returncode == 0, f"swaks LOGIN over STARTTLS: {text}")
        check("235 2.7.0" in text, f"235 after LOGIN: {text}")
        check("250 2.0.0 Ok: queued" in text, f"message queued: {text}")
        # Implicit TLS is covered by test_implicit_tls; swaks on-connect:
        out = subprocess.run(
            ["swaks", "--server", f"127.0.0.1:{d.submission_port}",
             "--tls", "--auth", "PLAIN", "--auth-user", "bob",
             "--auth-password", "wrong", "--from", "bob@example.net",
             "--to", "user@example.net", "--timeout", "20"],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=60)
        text = out.stdout.decode("utf-8", "replace")
        check(out.returncode != 0 and "535 5.7.8" in text,
              f"wrong password: 535: {text}")
        check("wrong" not in d.read_log(), "no password in the log")


def auth_plain(s, user, password):
    token = base64.b64encode(f"\0{user}\0{password}".encode()).decode()
    return s.docmd("AUTH", f"PLAIN {token}")


def test_password_guessing_limited():
    st = setup()
    with Daemon(st.yaml()) as d:
        with smtplib.SMTP("127.0.0.1", d.submission_port, timeout=10) as s:
            s.starttls(context=client_ctx())
            s.ehlo("client.test")
            codes = [auth_plain(s, "bob", f"guess{i}")[0] for i in range(3)]
            check(codes == [535, 535, 535], f"three failures: {codes}")
            code, msg = auth_plain(s, "bob", "hunter2")
            check(code == 454, f"blocked even with the right password: "
                               f"{code} {msg!r}")
        # A new session from the same address is blocked too.
        with smtplib.SMTP("127.0.0.1", d.submission_port, timeout=10) as s:
            s.starttls(context=client_ctx())
            s.ehlo("client.test")
            code, _ = auth_plain(s, "alice@example.org", PASSWORD)
            check(code == 454, f"the client stays blocked: {code}")
        m = d.metrics()
        check(metric_value(m, 'postseal_auth_attempts_total{result="failure"}')
              == 3, "three failures counted")
        check(metric_value(m, 'postseal_auth_attempts_total{result="blocked"}')
              == 2, "two blocked attempts counted")
        log = d.read_log()
        check("guess" not in log and "hunter2" not in log,
              "no guessed password in the log")


def test_parallel_guessing_limited():
    """Guesses sent on many sessions at once cannot all slip past the
    limit while their checks run: each attempt counts when it starts."""
    import threading
    st = setup()
    n = 12
    with Daemon(st.yaml()) as d:  # max_failures: 3
        conns = []
        for _ in range(n):
            s = smtplib.SMTP("127.0.0.1", d.submission_port, timeout=20)
            s.starttls(context=client_ctx())
            s.ehlo("client.test")
            conns.append(s)
        barrier = threading.Barrier(n)
        codes = []

        def guess(s, i):
            barrier.wait()
            codes.append(auth_plain(s, "bob", f"parallel{i}")[0])
        threads = [threading.Thread(target=guess, args=(s, i))
                   for i, s in enumerate(conns)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        for s in conns:
            s.close()
        check(len(codes) == n, f"every guess answered: {codes}")
        check(codes.count(535) <= 3 and codes.count(454) >= n - 3,
              f"at most max_failures checked, the rest refused: {codes}")


def test_auth_bad_input():
    st = setup()
    with Daemon(st.yaml()) as d:
        with smtplib.SMTP("127.0.0.1", d.submission_port, timeout=10) as s:
            s.starttls(context=client_ctx())
            s.ehlo("client.test")
            code, _ = s.docmd("AUTH", "PLAIN !!!notbase64")
            check(code == 501, f"bad base64: 501, got {code}")
            code, _ = s.docmd("AUTH", "CRAM-MD5")
            check(code == 504, f"unknown mechanism: 504, got {code}")
            code, _ = s.docmd("AUTH", "LOGIN")
            check(code == 334, f"LOGIN asks: {code}")
            code, _ = s.docmd("*")
            check(code == 501, f"cancel: 501, got {code}")
            code, _ = auth_plain(s, "bob", "hunter2")
            check(code == 235, f"then a good AUTH works: {code}")
            code, _ = auth_plain(s, "bob", "hunter2")
            check(code == 503, f"a second AUTH: 503, got {code}")


def test_implicit_tls():
    st = setup()
    with Daemon(st.yaml(), submissions=True) as d:
        with smtplib.SMTP_SSL("127.0.0.1", d.submissions_port, timeout=10,
                              context=client_ctx()) as s:
            s.ehlo("client.test")
            check(not s.has_extn("starttls"), "no STARTTLS inside TLS")
            s.login("bob", "hunter2")
            s.sendmail("bob@example.net", ["user@example.net"],
                       b"Subject: 465\r\n\r\nhi\r\n")
        check("listener=submissions" in d.read_log(), "logged as submissions")


def test_openssl_s_client():
    st = setup()
    with Daemon(st.yaml()) as d:
        out = subprocess.run(
            ["openssl", "s_client", "-starttls", "smtp", "-connect",
             f"127.0.0.1:{d.smtp_port}", "-CAfile", st.pki.ca_cert,
             "-verify_return_error", "-servername", "mx.test.example"],
            input=b"QUIT\r\n", stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, timeout=30)
        text = out.stdout.decode("utf-8", "replace")
        check("Verify return code: 0 (ok)" in text,
              f"s_client verified the chain: {text[-1500:]}")
        check("TLSv1.3" in text, "TLS 1.3 negotiated")
        out = subprocess.run(
            ["openssl", "s_client", "-starttls", "smtp", "-connect",
             f"127.0.0.1:{d.smtp_port}", "-tls1_2", "-CAfile",
             st.pki.ca_cert],
            input=b"QUIT\r\n", stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, timeout=30)
        text = out.stdout.decode("utf-8", "replace")
        check("Protocol  : TLSv1.2" in text and "ECDHE" in text,
              f"TLS 1.2 with ECDHE: {text[-1500:]}")
        out = subprocess.run(
            ["openssl", "s_client", "-starttls", "smtp", "-connect",
             f"127.0.0.1:{d.smtp_port}", "-tls1_1"],
            input=b"QUIT\r\n", stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, timeout=30)
        text = out.stdout.decode("utf-8", "replace")
        check("Cipher is (NONE)" in text or out.returncode != 0,
              f"TLS 1.1 refused: {text[-800:]}")


def test_session_resumption():
    st = setup()
    with Daemon(st.yaml()) as d:
        ctx = client_ctx()
        session = None
        reused = []
        for _ in range(3):
            s = smtplib.SMTP("127.0.0.1", d.smtp_port, timeout=10)
            s.ehlo("client.test")
            s.putcmd("STARTTLS")
            s.getreply()
            s.sock = ctx.wrap_socket(s.sock, server_hostname="mx.test.example",
                                     session=session)
            s.file = None
            s.ehlo("client.test")  # reads the TLS 1.3 ticket with it
            s.noop()
            reused.append(s.sock.session_reused)
            session = s.sock.session
            s.quit()
        check(reused == [False, True, True], f"resumed: {reused}")
        m = d.metrics()
        check(metric_value(m, 'postseal_tls_handshakes_total{direction='
                              '"inbound",result="resumed"}') == 2,
              "two resumed handshakes counted")


def test_handshake_garbage_and_stall():
    st = setup()
    with Daemon(st.yaml("timeouts:\n  command: 2\n"), submissions=True) as d:
        s = socket.create_connection(("127.0.0.1", d.submissions_port), 10)
        s.sendall(b"\x16\x03\x01\x00\x05hello this is not TLS\r\n" * 4)
        s.settimeout(10)
        data = b""
        try:
            while True:
                chunk = s.recv(4096)
                if not chunk:
                    break
                data += chunk
        except ConnectionResetError:
            pass
        check(b"220" not in data, f"no greeting to garbage: {data!r}")
        s.close()
        # A client that connects and says nothing is dropped at the timeout.
        s = socket.create_connection(("127.0.0.1", d.submissions_port), 10)
        start = time.monotonic()
        s.settimeout(15)
        try:
            closed = s.recv(4096) == b""
        except ConnectionResetError:
            closed = True
        elapsed = time.monotonic() - start
        check(closed and elapsed < 8, f"stalled handshake closed after "
                                      f"{elapsed:.1f}s")
        s.close()
        check(wait_until(lambda: "tls_handshake_timeout" in d.read_log(), 5),
              "the stall is logged")
        m = d.metrics()
        v = metric_value(m, 'postseal_tls_handshakes_total{direction='
                            '"inbound",result="failed"}')
        check(v >= 1, f"failed handshake counted: {v}")
        check(metric_value(m, 'postseal_smtp_sessions_active{listener='
                              '"submissions"}') == 0, "no session leaked")


def test_reload_certificate():
    st = setup()
    with Daemon(st.yaml()) as d:
        def peer_cn():
            with smtplib.SMTP("127.0.0.1", d.smtp_port, timeout=10) as s:
                s.starttls(context=client_ctx())
                cert = s.sock.getpeercert()
                return dict(x[0] for x in cert["subject"])["commonName"]
        check(peer_cn() == "mx.test.example", "first certificate")
        cert2, key2 = st.pki.leaf("server2", ["mx2.test.example",
                                              "mx.test.example"],
                                  ips=["127.0.0.1"])
        d.rewrite_config(
            st.yaml().replace(st.cert, cert2).replace(st.key, key2))
        d.signal(signal.SIGHUP)
        check(wait_until(lambda: "configuration reloaded" in d.read_log(), 10),
              "reloaded")
        check(peer_cn() == "mx2.test.example", "the new certificate is used")
        # A broken certificate file: the reload is refused, TLS goes on.
        bad = os.path.join(d.tmp, "bad.pem")
        with open(bad, "w") as f:
            f.write("not a certificate\n")
        d.rewrite_config(st.yaml().replace(st.cert, bad))
        d.signal(signal.SIGHUP)
        check(wait_until(lambda: "reload refused" in d.read_log(), 10),
              "bad certificate refused at reload")
        check(peer_cn() == "mx2.test.example", "still serving TLS")


def test_bad_config():
    st = setup()
    import harness
    for yaml, want in [
        (f"tls:\n  cert_file: {st.cert}\n  key_file: {st.pki.ca_key}\n",
         "match"),
        ("tls:\n  cert_file: /nonexistent.pem\n  key_file: /x.key\n",
         "/nonexistent.pem"),
        (f"auth:\n  passwd_file: {st.pki.ca_cert}\n", "passwd"),
    ]:
        path = os.path.join(st.pki.dir, "bad.yaml")
        with open(path, "w") as f:
            f.write(yaml)
        out = subprocess.run([harness.POSTSEALD, "--check-config", "-c", path],
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             timeout=30)
        text = out.stdout.decode()
        check(out.returncode != 0 and want in text,
              f"{yaml!r}: exit {out.returncode}, {text!r} names {want!r}")


if __name__ == "__main__":
    import atexit
    atexit.register(_cleanup)
    if not have_tools():
        print("openssl or mkpasswd missing")
        sys.exit(SKIP)
    sys.exit(run_tests([
        test_starttls_relay_port,
        test_starttls_injection_discarded,
        test_submission_requires_tls_and_auth,
        test_submission_auth_relays,
        test_auth_login_swaks,
        test_password_guessing_limited,
        test_parallel_guessing_limited,
        test_auth_bad_input,
        test_implicit_tls,
        test_openssl_s_client,
        test_session_resumption,
        test_handshake_garbage_and_stall,
        test_reload_certificate,
        test_bad_config,
    ]))
