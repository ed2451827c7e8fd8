// The device's screen in the browser: a one-time ticket (cookie session + CSRF), then the
// desktop WebSocket. The broker first says what this viewer may do ({"type":"ready"}); noVNC
// (npm, served from node_modules) then takes the socket and we tell the broker to start RFB.
// The broker filters what noVNC sends: a view-only page sends no input, and if it did, the
// broker would drop it.
import RFB from "/vendor/novnc/core/rfb.js";

const screen = document.getElementById("screen");
const status = document.getElementById("status");
const session = screen.dataset.session;
const mode = screen.dataset.mode || "control";
const $ = (id) => document.getElementById(id);

function show(text) { status.textContent = text; }

async function ticket() {
  const csrf = document.querySelector('meta[name="csrf-token"]')?.content || "";
  const resp = await fetch(`/api/v1/gateway/sessions/${session}/terminal-ticket`, {
    method: "POST",
    credentials: "same-origin",
    headers: {"Content-Type": "application/json", "X-CSRF-Token": csrf},
    body: JSON.stringify({mode}),
  });
  const body = await resp.json();
  if (!resp.ok) throw new Error(body.detail || "refused");
  return body;
}

function controls(rfb, ready) {
  const scale = $("scale");
  rfb.scaleViewport = scale.checked;
  scale.addEventListener("change", () => { rfb.scaleViewport = scale.checked; });
  $("fullscreen").addEventListener("click", () => {
    if (document.fullscreenElement) document.exitFullscreen();
    else document.documentElement.requestFullscreen();
  });
  $("rights").textContent = ready.input ? "you control the screen" : "view only";
  if (ready.input) {
    $("ctrl-alt-del").hidden = false;
    $("ctrl-alt-del").addEventListener("click", () => rfb.sendCtrlAltDel());
  }
  if (ready.clipboard) {
    const panel = $("clipboard-panel");
    $("clipboard-toggle").hidden = false;
    $("clipboard-toggle").addEventListener("click", () => { panel.hidden = !panel.hidden; });
    $("clipboard-send").addEventListener("click", () => rfb.clipboardPasteFrom($("clipboard-text").value));
    rfb.addEventListener("clipboard", (ev) => { $("clipboard-text").value = ev.detail.text; });
  }
}

function start(ws, ready) {
  ws.onmessage = null;
  const rfb = new RFB(screen, ws, {shared: true});
  rfb.viewOnly = !ready.input;
  rfb.focusOnClick = ready.input;
  rfb.addEventListener("connect", () => { show("connected"); screen.dataset.connected = "1"; });
  rfb.addEventListener("desktopname", (ev) => { document.title = `${ev.detail.name} · screen`; });
  controls(rfb, ready);
  window.sbDesktop = rfb;  // for the browser tests and the console
  // noVNC attaches to the socket on its next turn; the broker starts RFB once it listens.
  const go = () => (ws.onmessage ? ws.send(JSON.stringify({type: "start"})) : setTimeout(go, 5));
  go();
}

(async function () {
  let issued;
  try { issued = await ticket(); } catch (err) { show(err.message); return; }
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  const ws = new WebSocket(`${scheme}://${location.host}${issued.desktop}?ticket=${issued.ticket}`);
  ws.binaryType = "arraybuffer";
  let problem = "";
  ws.addEventListener("close", (ev) => {
    delete screen.dataset.connected;
    show(problem || (ev.code === 1000 ? "closed" : `closed: ${ev.reason || ev.code}`));
  });
  ws.onmessage = (ev) => {
    const msg = JSON.parse(ev.data);
    if (msg.error) { problem = msg.detail; show(problem); return; }
    if (msg.type === "ready") start(ws, msg);
  };
  show("waiting for the device…");
})();
