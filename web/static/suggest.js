// Suggestions for a typed field (the auditor's device search): as the user types, ask the
// field's data-suggest endpoint for names starting with what is typed and fill its datalist.
// The form works without this script: the server matches the exact name (or id) typed.
(function () {
  "use strict";
  var fields = document.querySelectorAll("input[data-suggest][list]");
  Array.prototype.forEach.call(fields, function (input) {
    var list = document.getElementById(input.getAttribute("list"));
    var timer = null;
    var asked = null;
    if (!list) {
      return;
    }
    input.addEventListener("input", function () {
      clearTimeout(timer);
      timer = setTimeout(function () {
        var prefix = input.value;
        if (prefix === asked) {
          return;
        }
        asked = prefix;
        var url = input.dataset.suggest + "?limit=20&prefix=" + encodeURIComponent(prefix);
        fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } })
          .then(function (r) { return r.ok ? r.json() : { items: [] }; })
          .then(function (body) {
            if (prefix !== asked) {
              return; // a later keystroke asked again
            }
            list.replaceChildren.apply(list, body.items.map(function (d) {
              var option = document.createElement("option");
              option.value = d.name;
              return option;
            }));
          })
          .catch(function () { /* no suggestions; typing still works */ });
      }, 150);
    });
  });
})();
