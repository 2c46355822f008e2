"""`postseal resolve` against real DNS servers on loopback: Debian's nsd
serving test zones (MX order, implicit and null MX, AAAA, NXDOMAIN, NODATA,
an MX host that is a CNAME or has no address, TXT, TLSA), and the scripted
FaultDns for what nsd will not do on demand (SERVFAIL, silence, a malformed
or truncated answer). The cache and the sharing of queries in flight are
shown by counting what FaultDns is asked. Every run is bounded in time."""

import json
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import POSTSEAL, SKIP, check, run_tests  # noqa: E402
from dnsserver import FaultDns, Nsd, have_nsd  # noqa: E402

EX_OK, EX_USAGE, EX_NOUSER, EX_TEMPFAIL = 0, 64, 67, 75

ZONE = """
@            IN SOA ns.example.test. host.example.test. 1 3600 600 86400 120
@            IN NS   ns
ns           IN A    127.0.0.1
@            IN MX   20 mx2
@            IN MX   10 mx1
@            IN MX   30 mx3
@            IN MX   40 alias
@            IN TXT  "v=spf1 " "ip4:192.0.2.0/24 -all"
mx1          IN A    192.0.2.1
mx1          IN AAAA 2001:db8::1
mx2          IN A    192.0.2.2
mx3          IN TXT  "no address here"
alias        IN CNAME real
real         IN A    192.0.2.4
implicit     IN A    192.0.2.5
implicit     IN AAAA 2001:db8::5
v6only       IN AAAA 2001:db8::6
nomail       IN MX   0 .
txtonly      IN TXT  "hello"
onlymx3      IN MX   10 mx3
_25._tcp.mx1 IN TLSA 3 1 1 0a0b0c0d
"""

NSD = None  # started once for the nsd tests


def resolve(server_port, *args, timeout=30):
    """Runs postseal resolve ARGS --server 127.0.0.1:PORT; returns
    (exit status, stdout, stderr, seconds)."""
    cmd = [POSTSEAL, "resolve", *args]
    if server_port is not None:
        cmd += ["--server", f"127.0.0.1:{server_port}"]
    start = time.monotonic()
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    took = time.monotonic() - start
    check("Sanitizer" not in r.stderr and "runtime error" not in r.stderr,
          f"sanitizer report: {r.stderr}")
    return r.returncode, r.stdout, r.stderr, took


def resolve_json(*args, want_rc=EX_OK):
    rc, out, err, _ = resolve(NSD.port, *args, "--json")
    check(rc == want_rc, f"{args}: exit {rc}, want {want_rc}: {out}{err}")
    return json.loads(out)


def test_mx_order_and_hosts():
    r = resolve_json("mx", "example.test")
    check(r["status"] == "ok", f"status ok: {r}")
    got = [(t["pref"], t["host"]) for t in r["targets"]]
    want = [(10, "mx1.example.test"), (20, "mx2.example.test"),
            (30, "mx3.example.test"), (40, "alias.example.test")]
    check(got == want, f"MX by preference: {got}")
    t = r["targets"]
    check(t[0]["addrs"] == ["2001:db8::1", "192.0.2.1"],
          f"mx1 AAAA then A: {t[0]['addrs']}")
    check(t[1]["addrs"] == ["192.0.2.2"], f"mx2: {t[1]}")
    check(t[2]["addrs"] == [] and t[2]["status"] == "not_found",
          f"mx3 kept without address: {t[2]}")
    check(t[3]["addrs"] == ["192.0.2.4"], f"alias followed: {t[3]}")
    check("alias.example.test is an alias (CNAME) of real.example.test"
          in r["detail"], f"CNAME noted: {r['detail']}")
    check(r["secure"] is False, "nsd sets no AD")


def test_mx_text_output():
    rc, out, err, _ = resolve(NSD.port, "mx", "Example.TEST.")
    check(rc == EX_OK, f"exit 0: {out}{err}")
    lines = out.splitlines()
    check(lines[0] == "status ok", f"first line: {lines}")
    check("10 mx1.example.test 2001:db8::1 192.0.2.1" in lines,
          f"mx1 line: {lines}")
    check("30 mx3.example.test (not_found)" in lines, f"mx3 line: {lines}")


def test_implicit_mx():
    r = resolve_json("mx", "implicit.example.test")
    check(len(r["targets"]) == 1, f"one implicit target: {r}")
    t = r["targets"][0]
    check(t["pref"] == 0 and t["host"] == "implicit.example.test",
          f"the domain itself, preference 0: {t}")
    check(t["addrs"] == ["2001:db8::5", "192.0.2.5"], f"addrs: {t}")


def test_host_aaaa_only():
    r = resolve_json("host", "v6only.example.test")
    check(r["targets"][0]["addrs"] == ["2001:db8::6"], f"AAAA: {r}")
    r = resolve_json("host", "[mx2.example.test]")
    check(r["targets"][0]["addrs"] == ["192.0.2.2"], f"bracketed host: {r}")


def test_null_mx():
    r = resolve_json("mx", "nomail.example.test", want_rc=EX_NOUSER)
    check(r["status"] == "null_mx", f"null_mx: {r}")
    check(r["targets"] == [], "no targets")


def test_nxdomain():
    r = resolve_json("mx", "nope.example.test", want_rc=EX_NOUSER)
    check(r["status"] == "not_found" and "NXDOMAIN" in r["detail"],
          f"NXDOMAIN: {r}")


def test_nodata():
    r = resolve_json("mx", "txtonly.example.test", want_rc=EX_NOUSER)
    check(r["status"] == "not_found", f"not_found: {r}")
    check(r["detail"] == "no MX/A/AAAA for txtonly.example.test",
          f"detail: {r['detail']}")


def test_mx_host_without_address():
    r = resolve_json("mx", "onlymx3.example.test", want_rc=EX_NOUSER)
    check(r["status"] == "not_found", f"not_found: {r}")
    check(r["targets"][0]["host"] == "mx3.example.test" and
          r["targets"][0]["status"] == "not_found", f"target kept: {r}")
    check("no address for any MX host" in r["detail"], r["detail"])


def test_txt_and_tlsa():
    r = resolve_json("txt", "example.test")
    check(r["rrs"] == ["v=spf1 ip4:192.0.2.0/24 -all"],
          f"strings concatenated: {r}")
    check(r["ttl"] == 300, f"TTL: {r}")
    rc, out, _, _ = resolve(NSD.port, "txt", "example.test")
    check('"v=spf1 ip4:192.0.2.0/24 -all"' in out.splitlines(), out)
    r = resolve_json("tlsa", "_25._tcp.mx1.example.test")
    check(r["rrs"] == ["3 1 1 0a0b0c0d"], f"TLSA: {r}")
    r = resolve_json("txt", "nope.example.test", want_rc=EX_NOUSER)
    check(r["status"] == "not_found", f"TXT NXDOMAIN: {r}")


def test_literal_needs_no_server():
    # The server port is closed: a literal must not be looked up.
    with FaultDns() as f:
        port = f.port
    rc, out, err, _ = resolve(port, "mx", "[192.0.2.9]", "--json")
    check(rc == EX_OK, f"exit 0: {out}{err}")
    r = json.loads(out)
    check(r["targets"][0]["addrs"] == ["192.0.2.9"], f"literal: {r}")


def test_usage():
    for args in ([], ["mx"], ["aaaa", "x.test"], ["mx", "a", "b"],
                 ["mx", "x.test", "--timeout", "0"],
                 ["mx", "x.test", "--server", "not-an-ip"]):
        rc, out, err, _ = resolve(None, *args)
        check(rc == EX_USAGE, f"{args}: exit {rc}, want 64: {err}")


def test_faults():
    faults = {"sf.test": "servfail", "silent.test": "timeout",
              "garbage.test": "garbage", "tc.test": "truncated",
              "refused.test": "refused"}
    with FaultDns(faults) as f:
        for name in ("sf.test", "garbage.test", "tc.test", "refused.test"):
            rc, out, err, _ = resolve(f.port, "mx", name, "--timeout", "500")
            check(rc == EX_TEMPFAIL, f"{name}: exit {rc}, want 75: {out}{err}")
            check("status tempfail" in out, f"{name}: {out}")
        rc, out, _, _ = resolve(f.port, "mx", "garbage.test")
        check("malformed answer" in out, f"garbage named: {out}")
        # Silence: 200 ms, then 400 ms (c-ares doubles per round).
        rc, out, err, took = resolve(f.port, "mx", "silent.test",
                                     "--timeout", "200", "--tries", "2")
        check(rc == EX_TEMPFAIL and "timeout" in out, f"timeout: {out}{err}")
        check(0.5 <= took < 5, f"within the timeout bound: {took:.2f}s")
        check(f.count("silent.test") == 2, "two tries")


def test_cache_and_sharing():
    """Five lookups of one name on one resolver: FaultDns is asked once
    (the second shares the first query, the other three hit the cache,
    negative answers included)."""
    with FaultDns({"sf.test": "servfail"}) as f:
        rc, out, err, _ = resolve(f.port, "mx", "nothing.test",
                                  "--repeat", "5")
        check(rc == EX_NOUSER, f"exit 67: {out}{err}")
        check(f.count("nothing.test") == 1,
              f"one query for five lookups, saw {f.count('nothing.test')}")
        check("stats queries=1 cache_hits=3 cache_misses=1 coalesced=1"
              in out, f"stats: {out}")
        # A temporary failure is kept a few seconds too.
        rc, out, err, _ = resolve(f.port, "txt", "sf.test", "--repeat", "5",
                                  "--tries", "1", "--json")
        check(rc == EX_TEMPFAIL, f"exit 75: {out}{err}")
        check(f.count("sf.test") == 1, f"SERVFAIL asked {f.count('sf.test')}x")
        r = json.loads(out)
        check(r["stats"]["queries"] == 1 and r["stats"]["tempfails"] == 1,
              f"stats: {r}")


def main():
    global NSD
    if not os.access(POSTSEAL, os.X_OK):
        print(f"SKIP: {POSTSEAL} not built")
        return SKIP
    if not have_nsd():
        print("SKIP: nsd is not installed (scripts/setup.sh installs it)")
        return SKIP
    NSD = Nsd({"example.test": ZONE}).start()
    try:
        return run_tests([
            test_mx_order_and_hosts, test_mx_text_output, test_implicit_mx,
            test_host_aaaa_only, test_null_mx, test_nxdomain, test_nodata,
            test_mx_host_without_address, test_txt_and_tlsa,
            test_literal_needs_no_server, test_usage, test_faults,
            test_cache_and_sharing,
        ])
    finally:
        NSD.stop()


if __name__ == "__main__":
    sys.exit(main())
