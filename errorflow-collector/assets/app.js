// errorflow dashboard: small progressive enhancements. Every page works
// without this file; it is served from /assets (the CSP forbids inline script).
(function () {
  "use strict";

  // Copy buttons: data-copy="text" or data-copy-from="element id".
  document.addEventListener("click", function (e) {
    var btn = e.target.closest("button.copy");
    if (!btn) return;
    var text = btn.dataset.copy;
    if (btn.dataset.copyFrom) {
      var el = document.getElementById(btn.dataset.copyFrom);
      text = el ? el.textContent : "";
    }
    var done = function () {
      var old = btn.textContent;
      btn.textContent = "Copied";
      setTimeout(function () { btn.textContent = old; }, 1500);
    };
    if (navigator.clipboard && window.isSecureContext) {
      navigator.clipboard.writeText(text).then(done, function () {});
    } else {
      var ta = document.createElement("textarea");
      ta.value = text;
      document.body.appendChild(ta);
      ta.select();
      try { document.execCommand("copy"); done(); } catch (_) {}
      ta.remove();
    }
  });

  // Forms that ask before they act.
  document.addEventListener("submit", function (e) {
    var msg = e.target.dataset && e.target.dataset.confirm;
    if (msg && !window.confirm(msg)) e.preventDefault();
  });

  // Select all incidents in the list.
  var all = document.getElementById("select-all");
  if (all) {
    all.addEventListener("change", function () {
      document.querySelectorAll('input[name="ids"]').forEach(function (c) { c.checked = all.checked; });
    });
  }

  // 24 h / 14 d chart toggle.
  document.querySelectorAll("[data-show]").forEach(function (b) {
    b.addEventListener("click", function () {
      document.querySelectorAll("[data-show]").forEach(function (o) {
        var on = o === b;
        o.setAttribute("aria-pressed", on ? "true" : "false");
        var target = document.getElementById(o.dataset.show);
        if (target) target.hidden = !on;
      });
    });
  });

  // Relative times stay fresh without reloading.
  function relative(iso) {
    var secs = Math.floor((Date.now() - Date.parse(iso)) / 1000);
    if (isNaN(secs)) return null;
    if (secs < 0) return "in the future";
    if (secs < 5) return "just now";
    if (secs < 60) return secs + " s ago";
    if (secs < 3600) return Math.floor(secs / 60) + " min ago";
    if (secs < 86400) return Math.floor(secs / 3600) + " h ago";
    if (secs < 2592000) return Math.floor(secs / 86400) + " d ago";
    return iso.slice(0, 10);
  }
  function refreshTimes() {
    document.querySelectorAll("time[datetime]").forEach(function (t) {
      var text = relative(t.getAttribute("datetime"));
      if (text && /ago|just now/.test(t.textContent)) t.textContent = text;
    });
  }
  setInterval(refreshTimes, 30000);

  // Live list: poll counts every 10 s; update the tab counts in place and
  // offer a refresh instead of reloading under the reader.
  var live = document.getElementById("live");
  if (live && window.fetch) {
    var base = {
      open: +live.dataset.open, quiet: +live.dataset.quiet,
      resolved: +live.dataset.resolved, newest: live.dataset.newest
    };
    var poll = function () {
      if (document.hidden) return;
      fetch(live.dataset.poll, { credentials: "same-origin", headers: { Accept: "application/json" } })
        .then(function (r) { return r.ok ? r.json() : null; })
        .then(function (d) {
          if (!d) return;
          ["open", "quiet", "resolved", "all"].forEach(function (k) {
            var el = document.querySelector('[data-count="' + k + '"]');
            if (el) el.textContent = d[k];
          });
          var changed = d.open - base.open + (d.quiet - base.quiet) + (d.resolved - base.resolved);
          var newer = d.newest && base.newest && d.newest > base.newest;
          if (changed > 0 || newer || (!base.newest && d.newest)) {
            var n = Math.max(changed, 0);
            document.getElementById("live-text").textContent =
              n > 0 ? n + " new incident" + (n === 1 ? "" : "s") + " and new events —" : "New events —";
            live.hidden = false;
          }
        })
        .catch(function () {});
    };
    setInterval(poll, 10000);
  }
})();
