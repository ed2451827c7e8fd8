// Times in the reader's time zone: every <time datetime="…Z"> the broker writes carries UTC
// (kept as the hover title); here its text becomes the browser's local time, with the zone.
(() => {
  const show = (root) => {
    for (const el of root.querySelectorAll("time[datetime]")) {
      if (el.dataset.local) continue;
      const moment = new Date(el.getAttribute("datetime"));
      if (Number.isNaN(moment.getTime())) continue;
      const options = {
        year: "numeric", month: "short", day: "numeric", hour: "2-digit", minute: "2-digit",
        timeZoneName: "short",
      };
      if (el.dataset.seconds) options.second = "2-digit";
      el.textContent = new Intl.DateTimeFormat(undefined, options).format(moment);
      el.dataset.local = "1";
    }
  };
  document.addEventListener("DOMContentLoaded", () => show(document));
  document.addEventListener("htmx:afterSwap", (event) => show(event.detail.target || document));
})();
