// Reports: one Chart.js bar chart per dataset, drawn from the numbers embedded in the page
// (the tables beside the charts hold the same numbers for screen readers and without JS).
(function () {
  "use strict";
  var data = document.getElementById("report-data");
  if (!data || typeof window.Chart === "undefined") {
    return;
  }
  // Colour-blind-safe, high-contrast palette (Okabe-Ito).
  var colours = ["#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000"];
  JSON.parse(data.textContent || "[]").forEach(function (report, index) {
    var canvas = document.getElementById("chart-" + report.name);
    if (!canvas) {
      return;
    }
    new window.Chart(canvas, {
      type: "bar",
      data: {
        labels: report.labels,
        datasets: [
          {
            label: report.title + " (" + report.unit + ")",
            data: report.values,
            backgroundColor: colours[index % colours.length],
          },
        ],
      },
      options: {
        responsive: true,
        animation: false,
        plugins: { legend: { display: false } },
        scales: { y: { beginAtZero: true } },
      },
    });
  });
})();
