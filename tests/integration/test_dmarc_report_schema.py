"""DMARC aggregate reports (RFC 7489 §7.2) against the RFC's own schema
(Appendix C, tests/data/dmarc/rfc7489-appendix-c.xsd, with the two fixes
noted at its top). The unit test binary writes a sample report built by
policy/dmarc.c's dmarc_report_xml (several rows, IPv4 and IPv6 sources,
text that needs escaping) with "test_dmarc --sample-report FILE";
xmllint validates it. Broken variants of the same document must fail, so
a schema that accepted anything would be noticed. xmllint missing is a
failure, not a skip: the check is the point of this test."""

import os
import shutil
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import BUILD, SOURCE, check, run_tests  # noqa: E402

XSD = os.path.join(SOURCE, "tests", "data", "dmarc", "rfc7489-appendix-c.xsd")
TEST_DMARC = os.path.join(BUILD, "tests", "test_dmarc")


def xmllint():
    path = shutil.which("xmllint")
    check(path is not None,
          "xmllint not found (Debian: libxml2-utils; scripts/setup.sh)")
    return path


def validate(path):
    """(returncode, output) of xmllint --schema on path."""
    r = subprocess.run([xmllint(), "--noout", "--schema", XSD, path],
                       capture_output=True, text=True, timeout=60)
    return r.returncode, r.stdout + r.stderr


def sample_report(tmp):
    check(os.access(TEST_DMARC, os.X_OK),
          f"{TEST_DMARC} missing: build the unit tests first")
    path = os.path.join(tmp, "report.xml")
    r = subprocess.run([TEST_DMARC, "--sample-report", path],
                       capture_output=True, text=True, timeout=60)
    check(r.returncode == 0,
          f"test_dmarc --sample-report failed ({r.returncode}): {r.stderr}")
    with open(path, encoding="utf-8") as f:
        return path, f.read()


def test_schema_compiles():
    # The schema is itself well formed and compiles (xmllint would say
    # "failed to compile" on the RFC's text as printed).
    rc, out = validate(XSD)
    check("failed to compile" not in out, f"schema does not compile: {out}")


def test_sample_report_validates():
    tmp = tempfile.mkdtemp(prefix="postseal-dmarc-")
    try:
        path, text = sample_report(tmp)
        rc, out = validate(path)
        check(rc == 0, f"report does not validate:\n{out}\n{text}")
        check(text.count("<record>") == 5, "five records")
        check("<source_ip>2001:db8:0:0:0:0:0:25</source_ip>" in text,
              "IPv6 written in full")
        check("<source_ip>198.51.100.7</source_ip>" in text,
              "IPv4-mapped written as IPv4")
        check("&amp; &lt;Co&gt; &quot;Receiver&quot;" in text,
              "org_name escaped")
    finally:
        shutil.rmtree(tmp)


def test_broken_reports_fail():
    tmp = tempfile.mkdtemp(prefix="postseal-dmarc-")
    try:
        path, text = sample_report(tmp)
        broken = {
            "compressed IPv6": text.replace(
                "2001:db8:0:0:0:0:0:25", "2001:db8::25"),
            "no fo": text.replace("    <fo>1:d</fo>\n", ""),
            "no version": text.replace("  <version>1.0</version>\n", ""),
            "bad disposition": text.replace(
                "<disposition>none</disposition>",
                "<disposition>pass</disposition>", 1),
            "no scope": text.replace("<scope>mfrom</scope>", "", 1),
            "unescaped": text.replace("&amp;", "&", 1),
        }
        for label, doc in broken.items():
            check(doc != text, f"{label}: the mutation applies")
            bad = os.path.join(tmp, "bad.xml")
            with open(bad, "w", encoding="utf-8") as f:
                f.write(doc)
            rc, out = validate(bad)
            check(rc != 0, f"{label}: validated, want a failure")
    finally:
        shutil.rmtree(tmp)


if __name__ == "__main__":
    sys.exit(run_tests([test_schema_compiles, test_sample_report_validates,
                        test_broken_reports_fail]))
