// File transfer through the broker (docs/FILES.md): list the allowed folders, upload (drag and
// drop or the picker, with progress) and download. A download is offered to save only once the
// broker says it is whole (its hash and the device's agree); the bytes are kept in memory
// until then.
(function () {
  const root = document.getElementById("files");
  const status = document.getElementById("status");
  const folder = document.getElementById("folder");
  const entries = document.getElementById("entries");
  const progress = document.getElementById("progress");
  const progressText = document.getElementById("progress-text");
  const log = document.getElementById("log");
  const csrf = document.querySelector('meta[name="csrf-token"]')?.content || "";
  const api = `/api/v1/gateway/sessions/${root.dataset.session}/files`;
  const headers = {"X-CSRF-Token": csrf};

  const say = (text) => { status.textContent = text; };
  const note = (text) => {
    const li = document.createElement("li");
    li.textContent = text;
    log.appendChild(li);
  };
  const show = (done, total, label) => {
    progress.max = total || 1;
    progress.value = done;
    progressText.textContent = `${label} ${done} / ${total || "?"} bytes`;
  };
  const detail = async (resp) => {
    try { return (await resp.json()).detail || resp.statusText; } catch (e) { return resp.statusText; }
  };

  async function list() {
    const resp = await fetch(`${api}?path=${encodeURIComponent(folder.value)}`, {headers});
    if (!resp.ok) { say(await detail(resp)); return; }
    const body = await resp.json();
    entries.replaceChildren();
    for (const entry of body.entries) {
      const li = document.createElement("li");
      li.textContent = entry.dir ? `${entry.name}/` : `${entry.name} (${entry.size} bytes)`;
      if (!entry.dir) {
        const get = document.createElement("button");
        get.textContent = "Download";
        get.setAttribute("aria-label", `Download ${entry.name}`);
        get.onclick = () => download(`${body.path}/${entry.name}`, entry.name);
        li.appendChild(get);
      }
      entries.appendChild(li);
    }
    say(`${body.entries.length} entries in ${body.path}`);
  }

  async function download(path, name) {
    const resp = await fetch(`${api}/content?path=${encodeURIComponent(path)}`, {headers});
    if (!resp.ok) { say(await detail(resp)); note(`download ${name} refused: ${await detail(resp)}`); return; }
    const total = Number(resp.headers.get("X-File-Size") || 0);
    const transfer = resp.headers.get("X-Transfer-Id");
    const reader = resp.body.getReader();
    const parts = [];
    let done = 0;
    try {
      for (;;) {
        const {done: end, value} = await reader.read();
        if (end) break;
        parts.push(value);
        done += value.length;
        show(done, total, `download ${name}`);
      }
    } catch (e) { /* the broker cut the stream: its outcome says why */ }
    const outcome = await (await fetch(`${api}/transfers/${transfer}`, {headers})).json();
    if (outcome.outcome !== "ok") { say(`download of ${name} failed: ${outcome.why || outcome.detail}`); note(`download ${name} failed`); return; }
    const link = document.createElement("a");
    link.href = URL.createObjectURL(new Blob(parts));
    link.download = name;
    document.body.appendChild(link);
    link.click();
    link.remove();
    note(`download ${name}: ${outcome.size} bytes, sha256 ${outcome.sha256}`);
    say(`downloaded ${name}`);
  }

  function upload(file) {
    // XMLHttpRequest, not fetch: only it reports upload progress.
    const xhr = new XMLHttpRequest();
    const path = `${folder.value.replace(/\/$/, "")}/${file.name}`;
    xhr.open("PUT", `${api}/content?path=${encodeURIComponent(path)}`);
    xhr.setRequestHeader("X-CSRF-Token", csrf);
    xhr.upload.onprogress = (ev) => show(ev.loaded, ev.total, `upload ${file.name}`);
    xhr.onload = () => {
      let body = {};
      try { body = JSON.parse(xhr.responseText); } catch (e) { /* not JSON */ }
      if (xhr.status === 200) {
        note(`upload ${file.name}: ${body.size} bytes, sha256 ${body.sha256}`);
        say(`uploaded ${file.name}`);
        list();
      } else {
        note(`upload ${file.name} failed: ${body.detail || xhr.status}`);
        say(`upload of ${file.name} failed: ${body.detail || xhr.status}`);
      }
    };
    xhr.onerror = () => say(`upload of ${file.name} failed: the connection broke`);
    xhr.send(file);
  }

  const drop = document.getElementById("drop");
  drop.addEventListener("dragover", (ev) => { ev.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (ev) => {
    ev.preventDefault();
    drop.classList.remove("over");
    for (const file of ev.dataTransfer.files) upload(file);
  });
  document.getElementById("pick").addEventListener("change", (ev) => {
    for (const file of ev.target.files) upload(file);
  });
  folder.addEventListener("change", list);

  (async function start() {
    const resp = await fetch(api, {headers});
    if (!resp.ok) { say(await detail(resp)); return; }
    const body = await resp.json();
    for (const path of body.folders) folder.add(new Option(path, path));
    if (!body.folders.length) { say("no folders are allowed for this device's group"); return; }
    await list();
  })();
})();
