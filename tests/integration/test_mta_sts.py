"""`postseal resolve mta-sts` against real servers on loopback: Debian's
nsd serving the _mta-sts TXT record and the policy host's address, and
Python HTTPS servers (http.server + ssl, certificates from a test CA made
with openssl) serving the policy, a chunked policy, a 404, a redirect,
text/html, and a certificate for another name. The command takes the DNS
server, the CA file and the port from a postseald configuration file
(dns.servers, tls.ca_file, tls.mta_sts_port); --port picks the other
servers. Every run is bounded in time; nothing leaves 127.0.0.1."""

import http.server
import json
import os
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import POSTSEAL, SKIP, check, run_tests  # noqa: E402
from dnsserver import Nsd, have_nsd  # noqa: E402
from tlsutil import Pki, have_tools  # noqa: E402

EX_OK, EX_NOUSER, EX_UNAVAILABLE, EX_CONFIG = 0, 67, 69, 78

ZONE = """
@            IN SOA ns.sts.test. host.sts.test. 1 3600 600 86400 120
@            IN NS   ns
ns           IN A    127.0.0.1
_mta-sts     IN TXT  "v=STSv1; id=1"
mta-sts      IN A    127.0.0.1
_mta-sts.two IN TXT  "v=STSv1; id=1"
_mta-sts.two IN TXT  "v=STSv1; id=2"
_mta-sts.bad IN TXT  "v=STSv1; id=not-alnum"
_mta-sts.noaddr IN TXT "v=STSv1; id=3"
_mta-sts.spf IN TXT  "v=spf1 -all"
"""

POLICY = ("version: STSv1\r\nmode: enforce\r\nmx: mx1.sts.test\r\n"
          "mx: *.mx.sts.test\r\nmax_age: 604800\r\n")

NSD = None
PKI = None
TMP = None
SERVERS = {}  # mode -> PolicyServer


class PolicyServer:
    """An HTTPS server on a free loopback port answering every GET as
    `mode` says; it records the requests it saw."""

    def __init__(self, mode, cert, key):
        self.mode = mode
        self.requests = []
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, fmt, *args):
                pass

            def do_GET(self):
                server.requests.append((self.path, self.headers.get("Host"),
                                        self.headers.get("Connection")))
                server.answer(self)

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0),
                                                     Handler)
        self.httpd.daemon_threads = True
        ctx = PKI.server_context(cert, key)
        self.httpd.socket = ctx.wrap_socket(self.httpd.socket,
                                            server_side=True)
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever,
                                       kwargs={"poll_interval": 0.1},
                                       daemon=True)
        self.thread.start()

    def answer(self, h):
        body = POLICY.encode()
        if self.mode == "ok":
            h.send_response(200)
            h.send_header("Content-Type", "text/plain; charset=utf-8")
            h.send_header("Content-Length", str(len(body)))
            h.end_headers()
            h.wfile.write(body)
        elif self.mode == "chunked":
            h.send_response(200)
            h.send_header("Content-Type", "text/plain")
            h.send_header("Transfer-Encoding", "chunked")
            h.end_headers()
            for i in range(0, len(body), 16):
                part = body[i:i + 16]
                h.wfile.write(b"%x\r\n%s\r\n" % (len(part), part))
            h.wfile.write(b"0\r\n\r\n")
        elif self.mode == "redirect":
            h.send_response(301)
            h.send_header("Location", "https://elsewhere.test/policy.txt")
            h.send_header("Content-Length", "0")
            h.end_headers()
        elif self.mode == "html":
            h.send_response(200)
            h.send_header("Content-Type", "text/html")
            h.send_header("Content-Length", str(len(body)))
            h.end_headers()
            h.wfile.write(body)
        else:  # notfound
            h.send_error(404)

    def stop(self):
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=10)


def write_config(name, ca_file, port):
    path = os.path.join(TMP, name)
    with open(path, "w") as f:
        f.write(f"dns:\n  servers:\n    - 127.0.0.1:{NSD.port}\n"
                f"  timeout_ms: 500\n  tries: 2\n"
                f"tls:\n  ca_file: {ca_file}\n  mta_sts_port: {port}\n")
    return path


def resolve(*args, timeout=60):
    """postseal resolve mta-sts ARGS; (exit status, stdout, stderr)."""
    r = subprocess.run([POSTSEAL, "resolve", "mta-sts", *args],
                       capture_output=True, text=True, timeout=timeout)
    check("Sanitizer" not in r.stderr and "runtime error" not in r.stderr,
          f"sanitizer report: {r.stderr}")
    return r.returncode, r.stdout, r.stderr


def config_for(mode):
    return write_config(f"{mode}.yaml", PKI.ca_cert, SERVERS[mode].port)


def test_policy_from_config():
    srv = SERVERS["ok"]
    before = len(srv.requests)
    rc, out, err = resolve("sts.test", "-c", config_for("ok"))
    check(rc == EX_OK, f"exit 0: {out}{err}")
    lines = out.splitlines()
    want = ["domain sts.test", "id 1",
            f"fetched_from 127.0.0.1:{srv.port}", "version STSv1",
            "mode enforce", "max_age 604800", "mx mx1.sts.test",
            "mx *.mx.sts.test"]
    check(lines == want, f"output:\n{out}\nwant:\n" + "\n".join(want))
    check(len(srv.requests) == before + 1, f"one request: {srv.requests}")
    path, host, conn = srv.requests[-1]
    check(path == "/.well-known/mta-sts.txt", f"path: {path}")
    check(host == f"mta-sts.sts.test:{srv.port}", f"Host: {host}")
    check(conn == "close", f"Connection: {conn}")


def test_policy_json_chunked():
    rc, out, err = resolve("sts.test", "-c", config_for("ok"), "--port",
                           str(SERVERS["chunked"].port), "--json")
    check(rc == EX_OK, f"exit 0: {out}{err}")
    r = json.loads(out)
    check(r["id"] == "1" and r["error"] is None, f"json: {r}")
    p = r["policy"]
    check(p["mode"] == "enforce" and p["max_age"] == 604800 and
          p["mx"] == ["mx1.sts.test", "*.mx.sts.test"], f"policy: {p}")
    check(len(SERVERS["chunked"].requests) >= 1, "chunked server asked")


def expect_failure(mode, want_in_err, want_rc=EX_UNAVAILABLE):
    rc, out, err = resolve("sts.test", "-c", config_for(mode))
    check(rc == want_rc, f"{mode}: exit {rc}, want {want_rc}: {out}{err}")
    lines = [ln for ln in err.splitlines() if ln]
    check(len(lines) == 1, f"{mode}: one line on stderr: {err!r}")
    check(lines[0].startswith("postseal resolve: mta-sts sts.test: "
                              "policy fetch failed: "),
          f"{mode}: stderr: {err}")
    check(want_in_err in err, f"{mode}: want {want_in_err!r} in {err!r}")
    check("id 1" in out.splitlines() and "mode" not in out,
          f"{mode}: the id, no policy: {out}")


def test_not_found():
    expect_failure("notfound", "HTTP 404, want 200")


def test_redirect_not_followed():
    srv = SERVERS["redirect"]
    expect_failure("redirect", "HTTP 301 redirect not followed (RFC 8461 "
                   "§3.3) (to https://elsewhere.test/policy.txt)")
    check(all(p == "/.well-known/mta-sts.txt" for p, _, _ in srv.requests),
          f"only the policy path asked: {srv.requests}")


def test_wrong_name_certificate():
    srv = SERVERS["wrongcert"]
    expect_failure("wrongcert", "certificate not verified: name mismatch: "
                   "wanted mta-sts.sts.test")
    check(srv.requests == [], f"no request sent: {srv.requests}")


def test_untrusted_ca():
    other = Pki(os.path.join(TMP, "other-ca"), name="Other CA")
    cfg = write_config("untrusted.yaml", other.ca_cert, SERVERS["ok"].port)
    rc, out, err = resolve("sts.test", "-c", cfg)
    check(rc == EX_UNAVAILABLE and "certificate not verified" in err,
          f"untrusted: {rc} {err}")


def test_wrong_content_type():
    expect_failure("html", "Content-Type text/html, want text/plain")


def test_no_policy_records():
    cfg = config_for("ok")
    for name, want in (("nope.sts.test", "NXDOMAIN"),
                       ("spf.sts.test", "no record begins with v=STSv1;"),
                       ("two.sts.test", "2 STSv1 records, want one"),
                       ("bad.sts.test", "invalid STSv1 record")):
        rc, out, err = resolve(name, "-c", cfg)
        check(rc == EX_NOUSER, f"{name}: exit {rc}, want 67: {out}{err}")
        check("no MTA-STS policy" in err and want in err,
              f"{name}: want {want!r}: {err}")
    rc, out, err = resolve("noaddr.sts.test", "-c", cfg)
    check(rc == EX_UNAVAILABLE and
          "mta-sts.noaddr.sts.test: no address" in err,
          f"no address: {rc} {err}")


def test_usage_and_config():
    rc, _, err = resolve("[192.0.2.1]")
    check(rc == 64 and "not a domain name" in err, f"literal: {rc} {err}")
    rc, _, err = resolve("sts.test", "--repeat", "2")
    check(rc == 64, f"--repeat: {rc} {err}")
    r = subprocess.run([POSTSEAL, "resolve", "mx", "sts.test", "--port",
                        "443"], capture_output=True, text=True, timeout=30)
    check(r.returncode == 64, f"--port is for mta-sts: {r.returncode}")
    rc, _, err = resolve("sts.test", "-c", os.path.join(TMP, "missing.yaml"))
    check(rc == EX_CONFIG, f"missing config: {rc} {err}")
    cfg = write_config("noca.yaml", os.path.join(TMP, "no-such-ca.pem"),
                       SERVERS["ok"].port)
    rc, _, err = resolve("sts.test", "-c", cfg)
    check(rc == EX_CONFIG and "no-such-ca.pem: No such file" in err,
          f"missing CA file: {rc} {err}")


def main():
    global NSD, PKI, TMP
    if not os.access(POSTSEAL, os.X_OK):
        print(f"SKIP: {POSTSEAL} not built")
        return SKIP
    if not have_nsd():
        print("SKIP: nsd is not installed (scripts/setup.sh installs it)")
        return SKIP
    if not have_tools():
        print("SKIP: openssl or mkpasswd missing")
        return SKIP
    TMP = tempfile.mkdtemp(prefix="postseal-mta-sts-")
    PKI = Pki(os.path.join(TMP, "pki"))
    cert, key = PKI.leaf("policy", ["mta-sts.sts.test"])
    other_cert, other_key = PKI.leaf("other", ["other.sts.test"])
    NSD = Nsd({"sts.test": ZONE}).start()
    try:
        for mode in ("ok", "chunked", "notfound", "redirect", "html"):
            SERVERS[mode] = PolicyServer(mode, cert, key)
        SERVERS["wrongcert"] = PolicyServer("ok", other_cert, other_key)
        start = time.monotonic()
        rc = run_tests([
            test_policy_from_config, test_policy_json_chunked,
            test_not_found, test_redirect_not_followed,
            test_wrong_name_certificate, test_untrusted_ca,
            test_wrong_content_type, test_no_policy_records,
            test_usage_and_config,
        ])
        print(f"took {time.monotonic() - start:.1f}s")
        return rc
    finally:
        for s in SERVERS.values():
            s.stop()
        NSD.stop()


if __name__ == "__main__":
    sys.exit(main())
