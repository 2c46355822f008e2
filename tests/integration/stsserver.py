"""An MTA-STS policy server for tests: HTTPS (http.server + ssl, a
certificate from tlsutil.Pki) on a free loopback port, answering
GET /.well-known/mta-sts.txt for Host mta-sts.<domain> with the policy
text policy(domain) gives (None: 404). It records (host, path) hits."""

import http.server
import threading


class PolicyServer:
    def __init__(self, pki, cert, key, policy):
        self.hits = []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, fmt, *args):
                pass

            def do_GET(self):
                host = (self.headers.get("Host") or "").split(":")[0]
                outer.hits.append((host, self.path))
                text = None
                if (self.path == "/.well-known/mta-sts.txt" and
                        host.startswith("mta-sts.")):
                    text = policy(host[len("mta-sts."):])
                if text is None:
                    self.send_error(404)
                    return
                body = text.encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.httpd.socket = pki.server_context(cert, key).wrap_socket(
            self.httpd.socket, server_side=True)
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever,
                                       kwargs={"poll_interval": 0.1},
                                       daemon=True)
        self.thread.start()

    def stop(self):
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=10)
