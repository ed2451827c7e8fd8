// Browser terminal: asks for a one-time ticket (cookie session + CSRF), then relays xterm.js
// keystrokes and output over the terminal WebSocket. Every byte shown is recorded by the broker.
(async function () {
  const el = document.getElementById("term");
  const status = document.getElementById("status");
  const session = el.dataset.session;
  const mode = el.dataset.mode || "control";
  const csrf = (document.cookie.match(/(?:^|; )sb_csrf=([^;]+)/) || [])[1] || "";
  const resp = await fetch(`/api/v1/gateway/sessions/${session}/terminal-ticket`, {
    method: "POST",
    credentials: "same-origin",
    headers: {"Content-Type": "application/json", "X-CSRF-Token": decodeURIComponent(csrf)},
    body: JSON.stringify({mode}),
  });
  const body = await resp.json();
  if (!resp.ok) { status.textContent = body.detail || "refused"; return; }
  const term = new Terminal({convertEol: false, cursorBlink: true});
  term.open(el);
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  const ws = new WebSocket(`${scheme}://${location.host}${body.terminal}?ticket=${body.ticket}`);
  ws.binaryType = "arraybuffer";
  const resize = () => {
    const cols = Math.max(20, Math.floor(el.clientWidth / 9));
    const rows = Math.max(5, Math.floor(el.clientHeight / 17));
    term.resize(cols, rows);
    if (ws.readyState === 1) ws.send(JSON.stringify({type: "resize", cols, rows}));
  };
  ws.onopen = () => { status.textContent = "connected"; resize(); term.focus(); };
  // A refusal arrives as a JSON error, then a close with the reason: keep the error shown.
  let problem = "";
  ws.onclose = (ev) => {
    status.textContent = problem || (ev.code === 1000 ? "closed" : `closed: ${ev.reason || ev.code}`);
  };
  ws.onmessage = (ev) => {
    if (typeof ev.data === "string") { problem = JSON.parse(ev.data).detail; status.textContent = problem; return; }
    term.write(new Uint8Array(ev.data));
  };
  if (mode !== "watch") term.onData((d) => ws.send(JSON.stringify({type: "input", data: d})));
  window.addEventListener("resize", resize);
})();
