"""Test PKI and password files, made at test time with the real tools.

Pki(dir) makes a test CA with `openssl req -x509` and issues leaf
certificates for names with `openssl x509 -req`, so no key is ever checked
in. mkpasswd() hashes a password with Debian's mkpasswd (package whois),
the tool an operator uses for auth.passwd_file.
"""

import os
import ssl
import subprocess

OPENSSL = "/usr/bin/openssl"
MKPASSWD = "/usr/bin/mkpasswd"


def _run(args, **kw):
    subprocess.run(args, check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.PIPE, timeout=60, **kw)


class Pki:
    """A CA in `folder` and leaves signed by it (EC P-256 keys: fast)."""

    def __init__(self, folder, name="Postseal Test CA"):
        self.dir = folder
        os.makedirs(folder, exist_ok=True)
        self.ca_key = os.path.join(folder, "ca.key")
        self.ca_cert = os.path.join(folder, "ca.pem")
        _run([OPENSSL, "req", "-x509", "-newkey", "ec", "-pkeyopt",
              "ec_paramgen_curve:P-256", "-nodes", "-keyout", self.ca_key,
              "-out", self.ca_cert, "-days", "30", "-subj", f"/CN={name}",
              "-addext", "basicConstraints=critical,CA:TRUE",
              "-addext", "keyUsage=critical,keyCertSign,cRLSign"])
        self.serial = 1

    def leaf(self, label, names, days=30, ips=()):
        """Issues a server certificate for DNS names (and IP addresses);
        returns (cert_path, key_path). The cert file holds the leaf then
        the CA (a chain, as operators deploy it)."""
        key = os.path.join(self.dir, f"{label}.key")
        csr = os.path.join(self.dir, f"{label}.csr")
        crt = os.path.join(self.dir, f"{label}.crt")
        chain = os.path.join(self.dir, f"{label}.pem")
        ext = os.path.join(self.dir, f"{label}.ext")
        san = ",".join([f"DNS:{n}" for n in names] +
                       [f"IP:{i}" for i in ips])
        with open(ext, "w") as f:
            f.write(f"subjectAltName={san}\n"
                    "extendedKeyUsage=serverAuth\n"
                    "basicConstraints=CA:FALSE\n")
        _run([OPENSSL, "req", "-newkey", "ec", "-pkeyopt",
              "ec_paramgen_curve:P-256", "-nodes", "-keyout", key, "-out",
              csr, "-subj", f"/CN={names[0]}"])
        self.serial += 1
        _run([OPENSSL, "x509", "-req", "-in", csr, "-CA", self.ca_cert,
              "-CAkey", self.ca_key, "-set_serial", str(self.serial),
              "-days", str(days), "-extfile", ext, "-out", crt])
        with open(chain, "w") as out:
            for p in (crt, self.ca_cert):
                with open(p) as f:
                    out.write(f.read())
        return chain, key

    def client_context(self):
        """A client SSLContext that trusts only this CA."""
        ctx = ssl.create_default_context(cafile=self.ca_cert)
        return ctx

    def server_context(self, cert, key):
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(cert, key)
        return ctx


def mkpasswd(password, method="yescrypt"):
    """A crypt(3) hash as `mkpasswd -m METHOD` writes it."""
    out = subprocess.run([MKPASSWD, "-m", method, "--stdin"],
                         input=password.encode(), check=True,
                         stdout=subprocess.PIPE, timeout=30)
    return out.stdout.decode().strip()


def have_tools():
    return os.path.exists(OPENSSL) and os.path.exists(MKPASSWD)
