#!/usr/bin/env python3
"""A DNS man in the middle for tests (stdlib only): forwards every query, UDP
and TCP, to an upstream server and removes the authority section of every
reply -- the NSEC/NSEC3 records (and SOA) that prove a denial of existence
or a wildcard expansion. Answer and additional sections (EDNS OPT) pass
through unchanged, so positive non-wildcard answers still validate.

Usage: strip_proxy.py LISTEN_IP LISTEN_PORT UPSTREAM_IP UPSTREAM_PORT
Prints "ready" once both sockets listen; runs until killed.
"""

import socket
import socketserver
import struct
import sys
import threading


def skip_name(msg, i):
    """Index just past the (possibly compressed) name at i."""
    while True:
        length = msg[i]
        if length == 0:
            return i + 1
        if length & 0xC0 == 0xC0:
            return i + 2
        i += 1 + length


def skip_rr(msg, i):
    i = skip_name(msg, i)
    rdlength = struct.unpack_from("!H", msg, i + 8)[0]
    return i + 10 + rdlength


def strip_authority(msg):
    """The reply without its authority section, and with only the EDNS OPT
    record left of the additional section (glue there could point into the
    removed names by compression)."""
    try:
        qd, an, ns, ar = struct.unpack_from("!HHHH", msg, 4)
        if ns == 0:
            return msg
        i = 12
        for _ in range(qd):
            i = skip_name(msg, i) + 4
        for _ in range(an):
            i = skip_rr(msg, i)
        kept = msg[12:i]
        for _ in range(ns):
            i = skip_rr(msg, i)
        opts = []
        for _ in range(ar):
            end = skip_rr(msg, i)
            if msg[i] == 0 and struct.unpack_from("!H", msg, i + 1)[0] == 41:
                opts.append(msg[i:end])
            i = end
        header = msg[:8] + struct.pack("!HH", 0, len(opts))
        return header + kept + b"".join(opts)
    except (IndexError, struct.error):
        return msg


UPSTREAM = None


def ask_udp(query):
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(3)
        s.sendto(query, UPSTREAM)
        reply, _ = s.recvfrom(65535)
        return reply


def read_exact(sock, n):
    buf = b""
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise ConnectionError("closed")
        buf += chunk
    return buf


def ask_tcp(query):
    with socket.create_connection(UPSTREAM, timeout=3) as s:
        s.sendall(struct.pack("!H", len(query)) + query)
        length = struct.unpack("!H", read_exact(s, 2))[0]
        return read_exact(s, length)


class Udp(socketserver.BaseRequestHandler):
    def handle(self):
        query, sock = self.request
        try:
            sock.sendto(strip_authority(ask_udp(query)), self.client_address)
        except OSError:
            pass


class Tcp(socketserver.BaseRequestHandler):
    def handle(self):
        try:
            while True:
                length = struct.unpack("!H", read_exact(self.request, 2))[0]
                reply = strip_authority(ask_tcp(read_exact(self.request, length)))
                self.request.sendall(struct.pack("!H", len(reply)) + reply)
        except (OSError, ConnectionError, struct.error):
            pass


class ThreadingUdp(socketserver.ThreadingMixIn, socketserver.UDPServer):
    daemon_threads = True


class ThreadingTcp(socketserver.ThreadingMixIn, socketserver.TCPServer):
    daemon_threads = True
    allow_reuse_address = True


def main():
    global UPSTREAM
    listen = (sys.argv[1], int(sys.argv[2]))
    UPSTREAM = (sys.argv[3], int(sys.argv[4]))
    udp = ThreadingUdp(listen, Udp)
    tcp = ThreadingTcp(listen, Tcp)
    threading.Thread(target=udp.serve_forever, daemon=True).start()
    print("ready", flush=True)
    tcp.serve_forever()


if __name__ == "__main__":
    main()
