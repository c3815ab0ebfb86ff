// Copy buttons: shown only when this script runs; the text stays
// selectable without it.
"use strict";
document.querySelectorAll("button.copy").forEach(function (b) {
  var target = document.getElementById(b.dataset.copy);
  if (!target || !navigator.clipboard) return;
  b.hidden = false;
  b.addEventListener("click", function () {
    navigator.clipboard.writeText(target.textContent).then(function () {
      var old = b.textContent;
      b.textContent = "Copied";
      setTimeout(function () { b.textContent = old; }, 1500);
    });
  });
});
