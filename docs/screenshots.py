#!/usr/bin/env python3
"""Screenshots of the incident pages, through headless Chromium's DevTools protocol.

Usage: python3 docs/screenshots.py BASE_URL TOKEN [OUT_DIR]
  e.g. with `faultline demo` running: python3 docs/screenshots.py http://127.0.0.1:8080 TOKEN docs

Opens /ui/incidents, gives the page the token the way a person would (it is kept
in sessionStorage, never in a URL), opens the first incident, presses
Acknowledge, and checks the chart and the new status are there. Standard
library only; needs Debian's `chromium`.
"""
import base64, json, os, socket, struct, subprocess, sys, tempfile, time, urllib.request

def ws_connect(url):
    assert url.startswith("ws://")
    host_port, path = url[5:].split("/", 1)
    host, port = host_port.split(":")
    s = socket.create_connection((host, int(port)), timeout=30)
    key = base64.b64encode(os.urandom(16)).decode()
    s.sendall((f"GET /{path} HTTP/1.1\r\nHost: {host_port}\r\nUpgrade: websocket\r\n"
               f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode())
    buf = b""
    while b"\r\n\r\n" not in buf:
        buf += s.recv(4096)
    assert b" 101 " in buf.split(b"\r\n")[0], buf
    return s

def ws_send(s, text):
    data = text.encode()
    head = bytes([0x81])
    n = len(data)
    if n < 126: head += bytes([0x80 | n])
    elif n < 65536: head += bytes([0x80 | 126]) + struct.pack(">H", n)
    else: head += bytes([0x80 | 127]) + struct.pack(">Q", n)
    mask = os.urandom(4)
    s.sendall(head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(data)))

def recv_exact(s, n):
    out = b""
    while len(out) < n:
        chunk = s.recv(n - len(out))
        if not chunk: raise EOFError
        out += chunk
    return out

def ws_recv(s):
    msg = b""
    while True:
        b0, b1 = recv_exact(s, 2)
        n = b1 & 0x7F
        if n == 126: n = struct.unpack(">H", recv_exact(s, 2))[0]
        elif n == 127: n = struct.unpack(">Q", recv_exact(s, 8))[0]
        msg += recv_exact(s, n)
        if b0 & 0x80: return msg.decode()

class Page:
    def __init__(self, ws): self.ws, self.n = ws, 0
    def call(self, method, **params):
        self.n += 1
        ws_send(self.ws, json.dumps({"id": self.n, "method": method, "params": params}))
        while True:
            m = json.loads(ws_recv(self.ws))
            if m.get("id") == self.n:
                if "error" in m: raise RuntimeError(m["error"])
                return m.get("result", {})
    def eval(self, expr):
        r = self.call("Runtime.evaluate", expression=expr, returnByValue=True, awaitPromise=True)
        return r.get("result", {}).get("value")
    def wait_for(self, expr, timeout=20):
        end = time.time() + timeout
        while time.time() < end:
            if self.eval(expr): return True
            time.sleep(0.2)
        raise TimeoutError(expr)
    def shot(self, path):
        data = self.call("Page.captureScreenshot", format="png", captureBeyondViewport=True)["data"]
        with open(path, "wb") as f: f.write(base64.b64decode(data))
        print("wrote", path)

def main():
    base, token = sys.argv[1], sys.argv[2]
    out = sys.argv[3] if len(sys.argv) > 3 else "docs"
    port = 9333
    profile = tempfile.mkdtemp()
    chrome = subprocess.Popen(["chromium", "--headless=new", "--no-sandbox", "--disable-gpu",
                               f"--remote-debugging-port={port}", f"--user-data-dir={profile}",
                               "--window-size=420,1600", "about:blank"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        end = time.time() + 30
        while True:
            try:
                targets = json.load(urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=2))
                target = next(t for t in targets if t.get("type") == "page")
                break
            except Exception:
                if time.time() > end: raise
                time.sleep(0.3)
        page = Page(ws_connect(target["webSocketDebuggerUrl"]))
        page.call("Page.enable")
        page.call("Emulation.setDeviceMetricsOverride", width=420, height=1400, deviceScaleFactor=1, mobile=True)
        page.call("Page.navigate", url=base + "/ui/incidents")
        page.wait_for("!!document.getElementById('token-input')")
        page.eval(f"document.getElementById('token-input').value = {json.dumps(token)};"
                  "document.getElementById('login').requestSubmit(); true")
        page.wait_for("document.querySelectorAll('#incidents li').length > 0")
        assert token not in page.eval("location.href")
        page.shot(os.path.join(out, "ui-incidents.png"))
        href = page.eval("document.querySelector('#incidents li a').href")
        page.call("Page.navigate", url=href)
        page.wait_for("!!document.querySelector('#chart polyline.rate')")
        page.wait_for("!!document.getElementById('ack') && !document.getElementById('ack').disabled")
        page.eval("document.getElementById('ack').click(); true")
        page.wait_for("document.getElementById('status') && document.getElementById('status').textContent === 'acknowledged'")
        page.wait_for("[...document.querySelectorAll('#timeline li')].some(li => li.textContent.includes('acknowledged'))")
        page.shot(os.path.join(out, "ui-incident.png"))
        print("ok: list loaded, incident opened, chart drawn, acknowledged")
    finally:
        chrome.terminate()
        chrome.wait()

if __name__ == "__main__":
    main()
