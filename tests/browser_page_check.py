#!/usr/bin/env python3
"""Drives build/serve's web page in headless Chromium (ServeHttp.PageInHeadlessChromium runs it).

    python3 tests/browser_page_check.py CHROMIUM PAGE_URL MATERIAL_FILE QUESTION SCREENSHOT.png OUT.json

Standard library only: Chromium's DevTools protocol over --remote-debugging-pipe (fd 3: commands in, fd 4: replies
out, NUL-terminated JSON). Loads the page, waits for "ready", attaches MATERIAL_FILE through the file input,
asks QUESTION greedily (12 tokens), samples the answer while it streams, saves a screenshot and writes
{answer, lengths_seen, material_info, speed, used} to OUT.json.
"""
import base64
import json
import os
import subprocess
import sys
import tempfile
import time

chromium, url, material, question, screenshot, out = sys.argv[1:7]
to_chrome_r, to_chrome_w = os.pipe()
from_chrome_r, from_chrome_w = os.pipe()
profile = tempfile.mkdtemp(prefix="ll_chromium_")


def child_fds():  # Chromium reads commands on fd 3 and writes replies on fd 4 (kept open: pass_fds)
    os.dup2(to_chrome_r, 3)
    os.dup2(from_chrome_w, 4)


proc = subprocess.Popen([chromium, "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run",
                         "--remote-debugging-pipe", f"--user-data-dir={profile}", "--window-size=1000,900",
                         "about:blank"], pass_fds=(3, 4, to_chrome_r, from_chrome_w), preexec_fn=child_fds,
                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
os.close(to_chrome_r)
os.close(from_chrome_w)
reader = os.fdopen(from_chrome_r, "rb")
next_id, buffer = 0, b""


def call(method, session=None, **params):
    global next_id, buffer
    next_id += 1
    msg = {"id": next_id, "method": method, "params": params}
    if session:
        msg["sessionId"] = session
    os.write(to_chrome_w, json.dumps(msg).encode() + b"\0")
    while True:
        while b"\0" not in buffer:
            chunk = reader.read1(65536)
            if not chunk:
                raise RuntimeError("chromium closed the DevTools pipe")
            buffer += chunk
        raw, buffer = buffer.split(b"\0", 1)
        reply = json.loads(raw)
        if reply.get("id") == next_id:
            if "error" in reply:
                raise RuntimeError(f"{method}: {reply['error']}")
            return reply.get("result", {})


def wait_for(session, expression, what, seconds=60):
    deadline = time.time() + seconds
    while time.time() < deadline:
        value = call("Runtime.evaluate", session, expression=expression, returnByValue=True)["result"].get("value")
        if value:
            return value
        time.sleep(0.05)
    raise RuntimeError(f"timed out waiting for {what}")


try:
    target = call("Target.createTarget", url=url)["targetId"]
    session = call("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
    call("Runtime.enable", session)
    wait_for(session, "document.getElementById('status') && document.getElementById('status').textContent === 'ready'",
             "the page to say ready")
    root = call("DOM.getDocument", session)["root"]["nodeId"]
    node = call("DOM.querySelector", session, nodeId=root, selector="#file")["nodeId"]
    call("DOM.setFileInputFiles", session, nodeId=node, files=[os.path.abspath(material)])
    info = wait_for(session, "(t => t.includes('tokens') ? t : '')(document.getElementById('material-info').textContent)",
                    "the material to be tokenized")
    call("Runtime.evaluate", session, expression=(
        "document.getElementById('question').value = %s; document.getElementById('temperature').value = '0';"
        "document.getElementById('max_tokens').value = '12'; document.getElementById('ask').click();"
    ) % json.dumps(question))
    lengths, deadline = [], time.time() + 60
    while time.time() < deadline:
        state = call("Runtime.evaluate", session, returnByValue=True, expression=(
            "({answer: (document.querySelector('.turn-assistant') || {}).textContent || '',"
            " done: !document.getElementById('answer') && !!document.querySelector('.turn-assistant'),"
            " speed: document.getElementById('speed').textContent, used: document.getElementById('used').textContent})"
        ))["result"]["value"]
        if not lengths or lengths[-1] != len(state["answer"]):
            lengths.append(len(state["answer"]))
        if state["done"]:
            break
        time.sleep(0.03)
    else:
        raise RuntimeError("timed out waiting for the answer")
    shot = call("Page.captureScreenshot", session, format="png")["data"]
    with open(screenshot, "wb") as f:
        f.write(base64.b64decode(shot))
    with open(out, "w") as f:
        json.dump({"answer": state["answer"], "lengths_seen": lengths, "material_info": info,
                   "speed": state["speed"], "used": state["used"]}, f)
finally:
    try:
        call("Browser.close")
    except Exception:
        pass
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
