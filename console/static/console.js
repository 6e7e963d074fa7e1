// mailgate console: the only script, loaded from the console itself
// (CSP script-src 'self'). Pages work without it; it only adds a
// "select all" box to bulk forms and asks before a delete.
"use strict";
document.addEventListener("DOMContentLoaded", function () {
  document.querySelectorAll("input[data-select-all]").forEach(function (all) {
    all.addEventListener("change", function () {
      document.querySelectorAll("input[name='" + all.dataset.selectAll + "']").forEach(function (box) {
        box.checked = all.checked;
      });
    });
  });
  document.querySelectorAll("[data-confirm]").forEach(function (el) {
    el.addEventListener("click", function (ev) {
      if (!window.confirm(el.dataset.confirm)) {
        ev.preventDefault();
      }
    });
  });
});
