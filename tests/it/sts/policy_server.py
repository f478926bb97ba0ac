"""An MTA-STS policy host for the tests: Python's http.server over TLS.

Usage: policy_server.py IP PORT CERT KEY DIR

Serves GET /.well-known/mta-sts.txt as DIR/behaviour says (re-read on every
request, so a test can change it while the server runs):
  ok        200 text/plain, the body is DIR/policy.txt
  html      200 text/html, the same body
  redirect  302 to another policy host
  missing   404
  big       200 text/plain, 70 KiB
  slow      200 text/plain headers, then one byte per second (slow-loris)
Prints "ready" once listening.
"""
import http.server
import os
import ssl
import sys
import time

ip, port, cert, key, state = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5]


def read(name):
    with open(os.path.join(state, name), "rb") as f:
        return f.read()


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        # Called once per response (by send_response): counts requests.
        with open(os.path.join(state, "requests.log"), "a") as f:
            f.write(self.path + "\n")

    def send(self, status, ctype, body):
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        if self.path != "/.well-known/mta-sts.txt":
            return self.send(404, "text/plain", b"not found\n")
        mode = read("behaviour").decode().strip()
        if mode == "ok":
            self.send(200, "text/plain; charset=utf-8", read("policy.txt"))
        elif mode == "html":
            self.send(200, "text/html", read("policy.txt"))
        elif mode == "redirect":
            self.send_response(302)
            self.send_header("Location", "https://elsewhere.test/.well-known/mta-sts.txt")
            self.send_header("Content-Length", "0")
            self.end_headers()
        elif mode == "missing":
            self.send(404, "text/plain", b"no policy here\n")
        elif mode == "big":
            self.send(200, "text/plain", read("policy.txt") + b"x: " + b"y" * 70 * 1024 + b"\n")
        elif mode == "slow":
            body = read("policy.txt")
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            for b in body:
                self.wfile.write(bytes([b]))
                self.wfile.flush()
                time.sleep(1)


class Server(http.server.ThreadingHTTPServer):
    daemon_threads = True


server = Server((ip, port), Handler)
context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
context.load_cert_chain(cert, key)
server.socket = context.wrap_socket(server.socket, server_side=True)
print("ready", flush=True)
server.serve_forever()
