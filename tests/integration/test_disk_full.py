"""Full disk: the spool on a small tmpfs. When it fills, clients get
452 4.3.1 (nothing acknowledged is lost); when space returns, service
resumes without a restart."""

import os
import re
import smtplib
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import SKIP, Daemon, check, run_tests  # noqa: E402


def mount_tmpfs(size):
    mnt = tempfile.mkdtemp(prefix="postseal-tmpfs-")
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700",
                        "tmpfs", mnt], capture_output=True, text=True)
    if r.returncode != 0:
        os.rmdir(mnt)
        return None
    return mnt


def send(port, token, size):
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as s:
        s.ehlo("full.test")
        try:
            s.sendmail(f"{token}@full.test", ["sink@example.net"],
                       f"Subject: {token}\r\n\r\n".encode() +
                       (b"f" * 78 + b"\r\n") * (size // 80))
            return 250
        except smtplib.SMTPDataError as e:
            return e.smtp_code, e.smtp_error


def test_disk_full():
    mnt = mount_tmpfs("3m")
    if mnt is None:
        print("cannot mount tmpfs (not root?)")
        sys.exit(SKIP)
    d = Daemon(threads=1, spool_dir=os.path.join(mnt, "spool"),
               extra="limits:\n  message_size: 1M\n")
    try:
        d.start()
        acked, refused = [], []
        for i in range(40):  # 40 x 200 KB > 3 MB: the disk fills
            r = send(d.smtp_port, f"m{i}", 200_000)
            if r == 250:
                acked.append(f"m{i}")
            else:
                refused.append(r)
        check(acked, "some messages fit")
        check(refused, "the disk filled up")
        check(all(r[0] == 452 and b"4.3.1" in r[1] for r in refused),
              f"full disk answers 452 4.3.1: {refused[:3]}")
        queued = {e["sender"].split("@")[0] for e in d.queue()}
        check(set(acked) <= queued, "every acknowledged message is spooled")
        check(not (queued - set(acked)), "no refused message spooled")
        # Space returns: grow the tmpfs; the next message goes through.
        subprocess.run(["mount", "-o", "remount,size=16m", mnt], check=True)
        check(send(d.smtp_port, "after", 200_000) == 250,
              "service resumes when space returns")
        check(d.stop() == 0, "clean stop")
        queued = {e["sender"].split("@")[0] for e in d.queue()}
        check(set(acked) | {"after"} <= queued, "all acknowledged kept")
        log = d.read_log()
        check(re.search(r"reason=spool_full", log), "refusals logged")
    finally:
        d.cleanup()
        subprocess.run(["umount", mnt])
        os.rmdir(mnt)


if __name__ == "__main__":
    sys.exit(run_tests([test_disk_full]))
