"""A test CA and S/MIME certificates made with the openssl CLI at test time.

Pki(dir).person("alice@example.test", kind="rsa"|"ec"|"ed25519") makes a
key and a certificate for that address (rfc822Name subjectAltName,
emailProtection, the key usage its key type calls for), signed by the
test CA, valid for ten years; expired=True makes one that ran out in
2001; other_ca=True one signed by a second CA nobody trusts.
Returns (key_path, cert_path).
"""

import os
import subprocess


def _run(*args):
    subprocess.run(list(args), check=True, capture_output=True)


class Pki:
    def __init__(self, folder):
        self.dir = folder
        os.makedirs(folder, exist_ok=True)
        self.ca_key, self.ca = self._ca("ca", "Postseal Test CA")
        self.other_key, self.other_ca = self._ca("other", "Untrusted CA")
        self.serial = 1000

    def _ca(self, name, cn):
        key = os.path.join(self.dir, f"{name}.key")
        crt = os.path.join(self.dir, f"{name}.pem")
        _run("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes",
             "-keyout", key, "-out", crt, "-days", "3650", "-subj",
             f"/CN={cn}", "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign")
        return key, crt

    def _newkey(self, path, kind):
        algs = {"rsa": ["-algorithm", "RSA", "-pkeyopt",
                        "rsa_keygen_bits:2048"],
                "ec": ["-algorithm", "EC", "-pkeyopt",
                       "ec_paramgen_curve:P-256"],
                "ed25519": ["-algorithm", "ED25519"]}
        _run("openssl", "genpkey", *algs[kind], "-out", path)

    def person(self, addr, kind="rsa", expired=False, other_ca=False):
        self.serial += 1
        stem = os.path.join(self.dir, f"{addr}-{kind}-{self.serial}")
        key, csr, crt, ext = (stem + ".key", stem + ".csr", stem + ".pem",
                              stem + ".ext")
        self._newkey(key, kind)
        _run("openssl", "req", "-new", "-key", key, "-out", csr, "-subj",
             f"/CN={addr.split('@')[0]}")
        usage = {"rsa": "digitalSignature,nonRepudiation,keyEncipherment",
                 "ec": "digitalSignature,nonRepudiation,keyAgreement",
                 "ed25519": "digitalSignature,nonRepudiation"}[kind]
        with open(ext, "w") as f:
            f.write(f"subjectAltName=email:{addr}\n"
                    "extendedKeyUsage=emailProtection\n"
                    f"keyUsage=critical,{usage}\n"
                    "subjectKeyIdentifier=hash\n"
                    "authorityKeyIdentifier=keyid\n"
                    "basicConstraints=CA:FALSE\n")
        ca, ca_key = ((self.other_ca, self.other_key) if other_ca
                      else (self.ca, self.ca_key))
        if expired:
            self._sign_expired(csr, crt, ext, ca, ca_key)
        else:
            _run("openssl", "x509", "-req", "-in", csr, "-CA", ca, "-CAkey",
                 ca_key, "-set_serial", str(self.serial), "-days", "3650",
                 "-extfile", ext, "-out", crt)
        return key, crt

    def _sign_expired(self, csr, crt, ext, ca, ca_key):
        """openssl ca sets any validity period (x509 -req cannot in 3.0)."""
        db = os.path.join(self.dir, f"db{self.serial}")
        os.makedirs(db)
        open(os.path.join(db, "index.txt"), "w").close()
        conf = os.path.join(db, "ca.cnf")
        with open(conf, "w") as f:
            f.write("[ca]\ndefault_ca=d\n[d]\n"
                    f"database={db}/index.txt\nnew_certs_dir={db}\n"
                    f"serial={db}/serial\ndefault_md=sha256\n"
                    "policy=p\nunique_subject=no\n[p]\ncommonName=supplied\n")
        with open(os.path.join(db, "serial"), "w") as f:
            f.write(f"{self.serial:04X}\n")
        _run("openssl", "ca", "-batch", "-config", conf, "-in", csr, "-out",
             crt, "-cert", ca, "-keyfile", ca_key, "-startdate",
             "20000101000000Z", "-enddate", "20010101000000Z", "-extfile",
             ext, "-notext")
