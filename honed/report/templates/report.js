// Example filters: wrong only, disagreements only, text search. Without JavaScript every row shows.
(function () {
  "use strict";
  function setUp(box) {
    var table = document.getElementById(box.getAttribute("data-table"));
    if (!table) { return; }
    var rows = Array.prototype.slice.call(table.tBodies[0].rows);
    var wrong = box.querySelector("input[name=wrong]");
    var disagree = box.querySelector("input[name=disagree]");
    var search = box.querySelector("input[type=search]");
    var count = box.querySelector(".count");
    function apply() {
      var text = search.value.trim().toLowerCase();
      var shown = 0;
      rows.forEach(function (row) {
        var keep = (!wrong.checked || row.getAttribute("data-wrong") === "1") &&
                   (!disagree.checked || row.getAttribute("data-disagree") === "1") &&
                   (!text || row.textContent.toLowerCase().indexOf(text) !== -1);
        row.hidden = !keep;
        if (keep) { shown += 1; }
      });
      count.textContent = "showing " + shown + " of " + rows.length;
    }
    [wrong, disagree].forEach(function (input) { input.addEventListener("change", apply); });
    search.addEventListener("input", apply);
    box.hidden = false;
    apply();
  }
  Array.prototype.forEach.call(document.querySelectorAll(".filters[data-table]"), setUp);
}());
