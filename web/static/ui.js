// Small progressive enhancements; every page works without this script.
// Copy buttons: <button data-copy="#id">Copy</button> copies the text of the element.
document.addEventListener("click", (event) => {
  const button = event.target.closest("[data-copy]");
  if (!button) return;
  const source = document.querySelector(button.dataset.copy);
  if (!source || !navigator.clipboard) return;
  navigator.clipboard.writeText(source.textContent.trim()).then(() => {
    const label = button.textContent;
    button.textContent = "Copied";
    setTimeout(() => { button.textContent = label; }, 1500);
  });
});

// Live regions polled by htmx (hx-trigger="every …") carry data-live-key: a swap happens only
// when the key changes, so a form being filled in is not replaced every few seconds. After a
// swap, the new status text is read out through #live-announce (a static role=status): every
// [data-announce] of the region, in order (the consent page adds who is connected now).
document.addEventListener("htmx:beforeSwap", (event) => {
  const target = event.detail.target;
  if (!target || !target.dataset || !target.dataset.liveKey || !target.id) return;
  const doc = new DOMParser().parseFromString(event.detail.serverResponse, "text/html");
  const fresh = doc.getElementById(target.id);
  if (fresh && fresh.dataset.liveKey === target.dataset.liveKey) event.detail.shouldSwap = false;
});
document.addEventListener("htmx:afterSwap", (event) => {
  if (!event.detail.target || !event.detail.target.dataset.liveKey) return;
  const announce = document.getElementById("live-announce");
  const parts = [...document.querySelectorAll("[data-live-key] [data-announce]")];
  if (announce && parts.length) {
    announce.textContent = parts.map((part) => part.textContent.trim()).join(" ");
  }
});

// The request form offers only the rights the chosen device's tool can give, and says what
// of each is recorded. The broker refuses any other right anyway (422); this only guides.
function showOfferedCapabilities() {
  const device = document.getElementById("device_id");
  const box = document.getElementById("capabilities");
  if (!device || !box) return;
  const option = device.options[device.selectedIndex];
  const provider = option && option.dataset.provider;
  for (const label of box.querySelectorAll("[data-capability]")) {
    const offered = !provider || label.dataset.providers.split(" ").includes(provider);
    const input = label.querySelector("input");
    label.hidden = !offered;
    label.style.display = offered ? "" : "none"; // the form's CSS would show a [hidden] label
    input.disabled = !offered;
    if (!offered) input.checked = false;
    const note = label.querySelector(".capability-recorded");
    if (note) {
      const recorded = provider && label.dataset.recordedBy.split(" ").includes(provider);
      note.textContent = provider ? (recorded ? "(recorded)" : "(events only, not recorded)") : "";
    }
  }
}
document.addEventListener("change", (event) => {
  if (event.target && event.target.id === "device_id") showOfferedCapabilities();
});
document.addEventListener("DOMContentLoaded", showOfferedCapabilities);
