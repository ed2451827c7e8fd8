// Auditor's screen replay: noVNC (npm, served from node_modules) decodes the sealed RFB stream.
// The page embeds the recording (released only after the viewing was sealed in the audit
// log); a fake WebSocket-like channel plays the server's side of the handshake (version,
// security type None, the recorded ServerInit) and then hands noVNC the recorded bytes on
// the recording's clock. noVNC's own decoders draw them: we decode nothing ourselves.
// Seeking backwards starts a fresh noVNC and feeds it everything up to the target at once
// (RFB streams such as Tight and ZRLE carry decoder state from the start).
import RFB from "/vendor/novnc/core/rfb.js";

const $ = (id) => document.getElementById(id);
const screen = $("screen");
const recording = JSON.parse($("rfb-data").textContent);

function fromBase64(text) {
  const raw = atob(text);
  const out = new Uint8Array(raw.length);
  for (let i = 0; i < raw.length; i += 1) out[i] = raw.charCodeAt(i);
  return out;
}

const serverInit = fromBase64(recording.serverInit);
const stream = fromBase64(recording.data);
const marks = recording.marks; // [[ms since ServerInit, end offset in stream], …]
const duration = marks.length ? marks[marks.length - 1][0] : 0;

// What noVNC needs from a WebSocket (see its core/websock.js rawChannelProps).
class RecordedChannel {
  constructor(onServerInit) {
    this.binaryType = "arraybuffer";
    this.protocol = "";
    this.readyState = WebSocket.OPEN;
    this.onerror = null;
    this.onmessage = null;
    this.onopen = null;
    this.onclose = null;
    this.step = 0;
    this.onServerInit = onServerInit;
  }

  deliver(bytes) {
    if (this.readyState !== WebSocket.OPEN || !this.onmessage) return;
    const copy = bytes.slice(); // noVNC keeps the buffer; the stream must stay intact
    this.onmessage({ data: copy.buffer });
  }

  // The viewer's side of the handshake arrives here; we answer as the server did, after
  // noVNC has returned from its send (it does not expect an answer inside the call).
  send() {
    this.step += 1;
    const step = this.step;
    setTimeout(() => {
      if (step === 1) {
        this.deliver(new Uint8Array([1, 1])); // one security type: None
      } else if (step === 2) {
        this.deliver(new Uint8Array([0, 0, 0, 0])); // SecurityResult: OK
      } else if (step === 3) {
        this.deliver(serverInit);
        this.onServerInit();
      } // afterwards: the viewer's requests go nowhere, the recording answers them
    }, 0);
  }

  start() {
    this.deliver(new TextEncoder().encode("RFB 003.008\n"));
  }

  close() {
    if (this.readyState === WebSocket.CLOSED) return;
    this.readyState = WebSocket.CLOSED;
    if (this.onclose) this.onclose({ code: 1000, reason: "", wasClean: true });
  }
}

const player = {
  rfb: null,
  channel: null,
  next: 0, // the first mark not yet delivered
  offset: 0, // bytes of the stream delivered
  position: 0, // ms of the recording shown
  playing: false,
  speed: 1,
  wall: 0,
  timer: 0,
};

function show() {
  const fmt = (ms) => {
    const s = Math.floor(ms / 1000);
    return `${Math.floor(s / 60)}:${String(s % 60).padStart(2, "0")}`;
  };
  $("seek").value = String(player.position);
  $("clock").textContent = `${fmt(player.position)} / ${fmt(duration)}`;
  let state = player.playing ? "playing" : "paused";
  if (!player.playing && player.position >= duration && player.next >= marks.length) state = "ended";
  $("player-state").textContent = state;
  screen.dataset.state = state;
  screen.dataset.position = String(player.position);
  $("play").textContent = player.playing ? "Pause" : "Play";
}

function connect() {
  if (player.rfb) player.rfb.disconnect();
  screen.replaceChildren();
  return new Promise((resolve) => {
    const channel = new RecordedChannel(() => resolve());
    const rfb = new RFB(screen, channel, { shared: true });
    rfb.viewOnly = true;
    rfb.scaleViewport = true;
    rfb.focusOnClick = false;
    Object.assign(player, { rfb, channel, next: 0, offset: 0 });
    setTimeout(() => channel.start(), 0);
  });
}

function deliverUntil(ms) {
  while (player.next < marks.length && marks[player.next][0] <= ms) {
    const end = marks[player.next][1];
    player.channel.deliver(stream.subarray(player.offset, end));
    player.offset = end;
    player.next += 1;
  }
}

function tick() {
  if (!player.playing) return;
  const now = performance.now();
  player.position = Math.min(duration, player.position + (now - player.wall) * player.speed);
  player.wall = now;
  deliverUntil(player.position);
  if (player.position >= duration) {
    deliverUntil(duration);
    player.playing = false;
  } else {
    player.timer = setTimeout(tick, 40);
  }
  show();
}

async function seek(ms) {
  const target = Math.max(0, Math.min(duration, ms));
  if (target < player.position || !player.rfb) await connect();
  deliverUntil(target);
  player.position = target;
  player.wall = performance.now();
  show();
}

function play() {
  if (player.playing) {
    player.playing = false;
    clearTimeout(player.timer);
    show();
    return;
  }
  const begin = player.position >= duration ? seek(0) : Promise.resolve();
  begin.then(() => {
    player.playing = true;
    player.wall = performance.now();
    tick();
  });
}

$("seek").max = String(duration);
$("seek").addEventListener("change", () => { seek(Number($("seek").value)); });
$("speed").addEventListener("change", () => { player.speed = Number($("speed").value); });
$("play").addEventListener("click", play);
seek(0).then(() => { screen.dataset.ready = "true"; show(); });
