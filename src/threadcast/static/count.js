/*! threadcast comment counts. No dependencies, no cookies.
 *
 *   <a href="/article-42#threadcast_thread" data-threadcast-count data-forum="demo"
 *      data-identifier="article-42">Comments</a>
 *   <script src="https://comments.example.com/static/count.js" async></script>
 *
 * Each element marked `data-threadcast-count` gets the text "N comments" ("1 comment"), or just
 * the number with `data-threadcast-count="number"`. `data-forum` and `data-api` may sit on the
 * script tag instead, for every element at once. A thread that does not exist yet has 0 comments.
 * `threadcast.refreshCounts()` counts again (after a single-page app changed the page).
 */
(function (window, document) {
  "use strict";

  var SCRIPT = document.currentScript;
  var defaults = SCRIPT ? SCRIPT.dataset : {};

  /** Where this script came from, minus /static/count.js: the default API base. */
  function scriptBase() {
    if (!SCRIPT || !SCRIPT.src) return "";
    var src = new URL(SCRIPT.src, window.location.href);
    var path = src.pathname.replace(/\/static\/count\.js$/, "");
    return (src.origin + (path === src.pathname ? "" : path)).replace(/\/+$/, "");
  }

  var base = (defaults.api || scriptBase()).replace(/\/+$/, "");

  function fetchCount(api, forum, identifier) {
    var query = new URLSearchParams({ forum: forum, identifier: identifier });
    return fetch(api + "/api/v1/threads?" + query, { credentials: "omit", cache: "no-store" }).then(function (res) {
      if (res.status === 404) return 0;
      if (!res.ok) throw new Error("count: HTTP " + res.status);
      return res.json().then(function (thread) { return thread.post_count; });
    });
  }

  function show(element, n) {
    element.dataset.threadcastCountValue = String(n);
    element.textContent = element.dataset.threadcastCount === "number" ? String(n) : n + (n === 1 ? " comment" : " comments");
  }

  /** Count every marked element; one request per distinct thread. Resolves when all are shown. */
  function refreshCounts() {
    var groups = new Map();
    document.querySelectorAll("[data-threadcast-count]").forEach(function (element) {
      var api = (element.dataset.api || base).replace(/\/+$/, "");
      var forum = element.dataset.forum || defaults.forum;
      var identifier = element.dataset.identifier;
      if (!forum || !identifier) return;
      var key = JSON.stringify([api, forum, identifier]);
      if (!groups.has(key)) groups.set(key, { api: api, forum: forum, identifier: identifier, elements: [] });
      groups.get(key).elements.push(element);
    });
    return Promise.all(Array.from(groups.values()).map(function (group) {
      return fetchCount(group.api, group.forum, group.identifier).then(
        function (n) { group.elements.forEach(function (element) { show(element, n); }); },
        function () { /* leave the element's own text in place */ }
      );
    }));
  }

  window.threadcast = window.threadcast || {};
  window.threadcast.refreshCounts = refreshCounts;

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", refreshCounts);
  else refreshCounts();
})(window, document);
