// Auditor pages: start the asciinema player on the replay page with the cast embedded in it.
// The cast was released by the server only after the viewing was sealed in the audit log, so
// the player never fetches anything itself.
(function () {
  "use strict";
  var holder = document.getElementById("player");
  var data = document.getElementById("cast-data");
  if (!holder || !data || typeof window.AsciinemaPlayer === "undefined") {
    return;
  }
  var cast = JSON.parse(data.textContent || '""');
  window.AsciinemaPlayer.create({ data: cast }, holder, {
    fit: "width",
    idleTimeLimit: 2,
    controls: true,
  });
})();
