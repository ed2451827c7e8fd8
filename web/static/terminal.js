// Browser terminal: asks for a one-time ticket (the login's cookie plus the CSRF token the
// page carries), then relays xterm.js keystrokes and output over the terminal WebSocket.
// Every byte shown is recorded by the broker.
(async function () {
  const el = document.getElementById("term");
  const status = document.getElementById("status");
  const session = el.dataset.session;
  const mode = el.dataset.mode || "control";
  const csrf = document.querySelector('meta[name="csrf-token"]')?.content || "";
  const resp = await fetch(`/api/v1/gateway/sessions/${session}/terminal-ticket`, {
    method: "POST",
    credentials: "same-origin",
    headers: {"Content-Type": "application/json", "X-CSRF-Token": csrf},
    body: JSON.stringify({mode}),
  });
  const body = await resp.json();
  if (!resp.ok) { status.textContent = body.detail || "refused"; return; }
  // "connected to pc-042 for HD-4711 — recorded", as the command line says it.
  const where = body.session ? `${body.session.device} for ${body.session.ticket}` : session;
  const recorded = body.session && body.session.recorded ? " — recorded" : "";
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
  // The socket opens at once; the shell follows once the user has approved (it may wait).
  let live = false;
  const connected = () => {
    if (live) return;
    live = true;
    status.textContent = (mode === "watch" ? "watching " : "connected to ") + where + recorded;
  };
  ws.onopen = () => {
    // Joining or watching: the shell already runs. Controlling: it may still wait for consent.
    if (mode === "control") status.textContent = `waiting for ${where}…`; else connected();
    resize();
    term.focus();
  };
  // A refusal arrives as a JSON error, then a close with the reason: keep the error shown.
  let problem = "";
  ws.onclose = (ev) => {
    const why = ev.reason ? `: ${ev.reason}` : (ev.code === 1000 ? "" : ` (${ev.code})`);
    status.textContent = problem || `disconnected from ${where}${why}`;
    status.dataset.closed = "true";
  };
  ws.onmessage = (ev) => {
    if (typeof ev.data === "string") { problem = JSON.parse(ev.data).detail; status.textContent = problem; return; }
    connected();
    term.write(new Uint8Array(ev.data));
  };
  if (mode !== "watch") term.onData((d) => ws.send(JSON.stringify({type: "input", data: d})));
  window.addEventListener("resize", resize);
})();
