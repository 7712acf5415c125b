/*! threadcast stats page (/stats): a forum's minute windows as live charts, in plain SVG.
 *
 * The page loads the windows of the chosen range from GET /api/v1/stats/{forum}?since=..., then
 * follows channel stats:{forum} on the push edge (EventSource on /sub/stats:{forum}). Each
 * closed minute arrives there as a `stats.window` message whose data is the minute's forum row
 * plus its own top threads; a minute published again (late events) replaces the earlier one.
 * After a reconnection the page reloads the range from the API, so nothing missed stays missing.
 */
(function (window, document) {
  "use strict";

  var SVG_NS = "http://www.w3.org/2000/svg";
  var MINUTE = 60000;
  var UNIT_MS = { s: 1000, m: MINUTE, h: 60 * MINUTE, d: 1440 * MINUTE, w: 10080 * MINUTE };
  var TOP = 10;
  var SLIDE_EVERY = 30000; // redraw so the time axis slides and old minutes leave the range
  var RELOAD_AFTER = 5000; // after the API failed (not a 4xx)
  var TICK_MINUTES = [1, 2, 5, 10, 15, 30, 60, 120, 180, 360, 720, 1440, 2880, 10080];
  var FORUM_NAME = /^[a-z0-9][a-z0-9_-]{0,63}$/;

  var root = document.getElementById("stats");
  var form = document.getElementById("st-form");
  var forumInput = document.getElementById("st-forum");
  var sinceSelect = document.getElementById("st-since");
  var stateLine = document.getElementById("st-state");
  var errorLine = document.getElementById("st-error");
  var charts = {
    posts: document.getElementById("st-posts"),
    top: document.getElementById("st-top"),
    latency: document.getElementById("st-latency"),
  };

  var view = null; // what is shown: see show()
  var threadInfo = new Map(); // thread id -> {name, url} once the API answered, null while asked

  // ---------------------------------------------------------------------------------------------
  // Small helpers

  function h(tag, attrs) {
    return build(document.createElement(tag), attrs, arguments);
  }

  function s(tag, attrs) {
    return build(document.createElementNS(SVG_NS, tag), attrs, arguments);
  }

  function build(node, attrs, args) {
    for (var name in attrs || {}) {
      var value = attrs[name];
      if (value === false || value == null) continue;
      if (name === "text") node.textContent = value;
      else node.setAttribute(name, String(value));
    }
    for (var i = 2; i < args.length; i++) if (args[i] != null) node.append(args[i]);
    return node;
  }

  function durationMs(text) {
    var match = /^(\d{1,9})([smhdw])$/.exec(String(text).trim());
    return match ? Number(match[1]) * UNIT_MS[match[2]] : NaN;
  }

  function clock(ms) {
    return new Date(ms).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", hourCycle: "h23" });
  }

  function count(n) {
    return Number(n || 0).toLocaleString();
  }

  function millis(value) {
    if (value == null) return "–";
    if (value === 0) return "0 ms";
    if (value >= 1000) return (value / 1000).toFixed(value >= 10000 ? 0 : 1) + " s";
    return (value >= 10 ? Math.round(value) : value.toFixed(1)) + " ms";
  }

  function plural(n, one, many) { return count(n) + " " + (n === 1 ? one : many); }

  /** Grid lines for values up to `max`: at most five steps of 1, 2 or 5 times a power of ten,
   * no finer than `finest`. */
  function niceScale(max, finest) {
    var raw = Math.max(max / 5, finest || 0, 1e-9);
    var power = Math.pow(10, Math.floor(Math.log10(raw)));
    var step = [1, 2, 5, 10].map(function (m) { return m * power; }).find(function (c) { return c >= raw; });
    return { max: Math.max(step, Math.ceil(max / step) * step), step: step };
  }

  function safeUrl(text) {
    try {
      var url = new URL(text, window.location.href);
      return url.protocol === "http:" || url.protocol === "https:" ? url.href : "";
    } catch (e) {
      return "";
    }
  }

  // ---------------------------------------------------------------------------------------------
  // Data: the windows in range, keyed by start time, and the top threads over them

  /** Show `forum` over the last `since`: forget what was shown, subscribe, load from the API. */
  function show(forum, since) {
    if (!FORUM_NAME.test(forum)) return showError("There is no forum named " + JSON.stringify(forum) + ".");
    if (view) {
      view.source.close();
      window.clearTimeout(view.retry);
    }
    view = {
      forum: forum,
      since: since,
      rangeMs: durationMs(since),
      rangeName: chooseSince(since), // as in "the last <rangeName>"
      windows: new Map(), // start ms -> the window (forum row + its top_threads)
      totals: new Map(), // thread id -> posts over the windows in range
      seen: new Map(), // message id -> {json: its data, start}, to drop repeats
      pending: [], // live windows that arrived before the API answered
      loaded: false,
      opened: false,
      fresh: null, // start of the window that arrived last, drawn highlighted
      source: null,
      retry: null, // timer of the next load after a failed one
    };
    forumInput.value = forum;
    var query = "?forum=" + encodeURIComponent(forum) + "&since=" + encodeURIComponent(since);
    if (window.location.search !== query) window.history.replaceState(null, "", query);
    document.title = forum + " · Forum stats · threadcast";
    setState("connecting");
    subscribe(view);
    load(view);
    draw();
  }

  /** Select `since` in the range picker (adding it when it is not there); its name. */
  function chooseSince(since) {
    var found = Array.prototype.some.call(sinceSelect.options, function (option) { return option.value === since; });
    if (!found) sinceSelect.append(h("option", { value: since, "data-name": since, text: "Last " + since }));
    sinceSelect.value = since;
    return sinceSelect.options[sinceSelect.selectedIndex].dataset.name;
  }

  /** (Re)load the range from the API. Live windows that arrive meanwhile wait in `pending`; a
   * window known only from a live message (not in the store yet when the API read it) stays. */
  function load(shown) {
    shown.loaded = false;
    fetch("/api/v1/stats/" + encodeURIComponent(shown.forum) + "?since=" + encodeURIComponent(shown.since), {
      cache: "no-store", credentials: "omit",
    }).then(function (res) {
      return res.json().catch(function () { return {}; }).then(function (body) {
        if (res.ok) return body;
        var err = new Error((body.error && body.error.message) || res.status + " " + res.statusText);
        err.status = res.status;
        throw err;
      });
    }).then(function (body) {
      if (shown !== view) return;
      var liveOnly = new Map(shown.windows);
      shown.windows.clear();
      shown.totals.clear();
      body.windows.forEach(function (w) {
        var start = Date.parse(w.window_start);
        liveOnly.delete(start);
        shown.windows.set(start, w);
      });
      body.top_threads.forEach(function (t) { shown.totals.set(t.thread_id, t.posts); });
      liveOnly.forEach(function (w) { apply(shown, w); });
      shown.pending.splice(0).forEach(function (w) { apply(shown, w); });
      shown.loaded = true;
      showError("");
      draw();
    }).catch(function (err) {
      if (shown !== view) return;
      showError("Cannot load the stats of " + shown.forum + ": " + err.message);
      if (err.status === undefined || err.status >= 500) {
        shown.retry = window.setTimeout(function () { load(shown); }, RELOAD_AFTER);
      }
    });
  }

  function subscribe(shown) {
    var source = (shown.source = new EventSource("/sub/stats:" + shown.forum));
    source.onopen = function () {
      if (shown.opened) load(shown); // a reconnection: fetch whatever was published meanwhile
      shown.opened = true;
      setState("live");
    };
    source.onerror = function () {
      if (shown === view) setState("reconnecting"); // EventSource retries by itself
    };
    source.onmessage = function (event) { receive(shown, event.data); };
  }

  function receive(shown, text) {
    var message;
    try { message = JSON.parse(text); } catch (e) { return; }
    if (!message || message.type !== "stats.window" || message.channel !== "stats:" + shown.forum) return;
    var data = message.data;
    if (!data || isNaN(Date.parse(data.window_start))) return;
    var json = JSON.stringify(data);
    var seen = shown.seen.get(message.id);
    if (seen && seen.json === json) return; // a repeat; a changed window replaces the old one
    shown.seen.set(message.id, { json: json, start: Date.parse(data.window_start) });
    if (!shown.loaded) return shown.pending.push(data);
    apply(shown, data);
    draw();
  }

  /** Put a window in (or in place of the one with the same start), moving the top-thread totals
   * by the window's own top list. A live window carries its top ten only, so until the next load
   * from the API (exact: every post counts) a thread gains the posts of the minutes where it made
   * the top ten. */
  function apply(shown, w) {
    var start = Date.parse(w.window_start);
    var old = shown.windows.get(start);
    if (old) addTops(shown, old.top_threads, -1);
    addTops(shown, w.top_threads, 1);
    shown.windows.set(start, w);
    shown.fresh = start;
  }

  function addTops(shown, tops, sign) {
    (tops || []).forEach(function (t) {
      var posts = (shown.totals.get(t.thread_id) || 0) + sign * t.posts;
      if (posts > 0) shown.totals.set(t.thread_id, posts);
      else shown.totals.delete(t.thread_id);
    });
  }

  /** Drop the windows that left the range; the range ends now (or at the newest window). */
  function range(shown) {
    var end = Date.now();
    shown.windows.forEach(function (w) { end = Math.max(end, Date.parse(w.window_end)); });
    var start = end - shown.rangeMs;
    shown.windows.forEach(function (w, key) {
      if (key < start) {
        addTops(shown, w.top_threads, -1);
        shown.windows.delete(key);
      }
    });
    shown.seen.forEach(function (seen, id) {
      if (seen.start < start) shown.seen.delete(id);
    });
    return { start: start, end: end };
  }

  function sortedWindows(shown) {
    return Array.from(shown.windows.keys()).sort(function (a, b) { return a - b; }).map(function (key) {
      return { start: key, w: shown.windows.get(key) };
    });
  }

  function topThreads(shown) {
    return Array.from(shown.totals.entries())
      .sort(function (a, b) { return b[1] - a[1] || a[0] - b[0]; })
      .slice(0, TOP)
      .map(function (entry, i) { return { rank: i + 1, thread_id: entry[0], posts: entry[1] }; });
  }

  // ---------------------------------------------------------------------------------------------
  // Drawing

  function draw() {
    if (!view) return;
    var span = range(view);
    var windows = sortedWindows(view);
    var tops = topThreads(view);
    var rangeName = view.rangeName;
    root.dataset.loaded = String(view.loaded); // the range came from the API
    root.dataset.windows = String(windows.length);
    drawTiles(windows);
    drawPosts(windows, span, rangeName);
    drawLatency(windows, span, rangeName);
    drawTop(tops, rangeName);
  }

  function drawTiles(windows) {
    var sum = { posts: 0, replies: 0, votes: 0 };
    windows.forEach(function (x) { for (var k in sum) sum[k] += x.w[k] || 0; });
    document.getElementById("st-total-posts").textContent = count(sum.posts);
    document.getElementById("st-total-replies").textContent = count(sum.replies);
    document.getElementById("st-total-votes").textContent = count(sum.votes);
    var last = windows[windows.length - 1];
    document.getElementById("st-last-p99").textContent = last ? millis(last.w.latency_p99_ms) : "–";
  }

  /** A fresh SVG filling the chart's plot area; the plot area's box in it. */
  function canvas(chart, height, margin) {
    var plot = chart.querySelector(".st-plot");
    var width = Math.max(280, Math.round(plot.clientWidth || 600));
    var svg = s("svg", { viewBox: "0 0 " + width + " " + height, width: width, height: height });
    plot.replaceChildren(svg);
    return {
      svg: svg,
      left: margin.left,
      top: margin.top,
      width: width - margin.left - margin.right,
      height: height - margin.top - margin.bottom,
    };
  }

  function emptyNote(box, text) {
    box.svg.append(s("text", {
      class: "st-empty", x: box.left + box.width / 2, y: box.top + box.height / 2, "text-anchor": "middle",
    }, text));
  }

  /** Horizontal grid lines with value labels on the left; returns y(value). */
  function valueAxis(box, max, finest, format) {
    var scale = niceScale(max, finest);
    var y = function (v) { return box.top + box.height - (v / scale.max) * box.height; };
    for (var v = 0; v <= scale.max + 1e-9; v += scale.step) {
      box.svg.append(s("line", { class: "st-gridline", x1: box.left, x2: box.left + box.width, y1: y(v), y2: y(v) }));
      box.svg.append(s("text", { class: "st-axis", x: box.left - 6, y: y(v) + 4, "text-anchor": "end" }, format(v)));
    }
    return y;
  }

  /** Time labels under the plot; returns x(ms). */
  function timeAxis(box, span) {
    var x = function (ms) { return box.left + ((ms - span.start) / (span.end - span.start)) * box.width; };
    var minutes = (span.end - span.start) / MINUTE;
    var step = TICK_MINUTES.find(function (m) { return (box.width / minutes) * m >= 72; }) || 10080;
    var stepMs = step * MINUTE;
    var below = box.top + box.height + 16;
    for (var t = Math.ceil(span.start / stepMs) * stepMs; t <= span.end; t += stepMs) {
      box.svg.append(s("text", { class: "st-axis", x: x(t), y: below, "text-anchor": "middle" }, clock(t)));
    }
    return x;
  }

  function drawPosts(windows, span, rangeName) {
    var chart = charts.posts;
    var box = canvas(chart, 220, { top: 10, right: 12, bottom: 24, left: 40 });
    var max = 0, total = 0, busiest = null;
    windows.forEach(function (x) {
      total += x.w.posts;
      if (!busiest || x.w.posts > busiest.w.posts) busiest = x;
      max = Math.max(max, x.w.posts);
    });
    var y = valueAxis(box, max, 1, count);
    var x = timeAxis(box, span);
    var slot = (MINUTE / (span.end - span.start)) * box.width;
    var gap = slot > 5 ? Math.min(2, slot * 0.2) : 0;
    var bottom = box.top + box.height;
    windows.forEach(function (item) {
      var posts = item.w.posts;
      box.svg.append(s("rect", {
        class: "st-bar" + (item.start === view.fresh ? " st-fresh" : ""),
        x: x(item.start) + gap / 2, y: y(posts), width: Math.max(1, slot - gap), height: Math.max(0, bottom - y(posts)),
        rx: slot > 6 ? 2 : 0, "data-minute": item.w.window_start, "data-posts": posts,
      }, s("title", {}, clock(item.start) + " · " + plural(posts, "post", "posts"))));
    });
    if (!windows.length) emptyNote(box, "No stats for " + view.forum + " in the last " + rangeName + " yet");
    box.svg.setAttribute("role", "img");
    box.svg.setAttribute("aria-label", "Posts per minute, last " + rangeName + ": " + (windows.length
      ? plural(total, "post", "posts") + " in " + plural(windows.length, "minute", "minutes") + ", the busiest at " +
        clock(busiest.start) + " with " + count(busiest.w.posts)
      : "no minutes with stats yet"));
    var newest = windows[windows.length - 1];
    chart.querySelector(".st-note").textContent = "Last " + rangeName +
      (newest ? " · " + plural(total, "post", "posts") + " · newest minute " + clock(newest.start) : "");
    fillTable(chart, windows.slice().reverse().map(function (item) {
      var w = item.w;
      return [clock(item.start), count(w.posts), count(w.replies), count(w.votes), count(w.active_threads)];
    }));
  }

  function drawLatency(windows, span, rangeName) {
    var chart = charts.latency;
    var box = canvas(chart, 200, { top: 10, right: 12, bottom: 24, left: 52 });
    var max = 0;
    windows.forEach(function (item) { max = Math.max(max, item.w.latency_p99_ms || 0, item.w.latency_p50_ms || 0); });
    var y = valueAxis(box, max, 0.1, millis);
    var x = timeAxis(box, span);
    var measured = windows.filter(function (item) {
      return item.w.latency_p50_ms != null || item.w.latency_p99_ms != null;
    });
    ["p50", "p99"].forEach(function (name) {
      var field = "latency_" + name + "_ms", d = "", previous = null;
      windows.forEach(function (item) {
        var value = item.w[field];
        if (value == null) return;
        var px = x(item.start + MINUTE / 2), py = y(value);
        // A minute without figures breaks the line.
        var joined = previous !== null && item.start - previous <= MINUTE * 1.5;
        d += (joined ? "L" : "M") + px.toFixed(1) + " " + py.toFixed(1);
        previous = item.start;
        box.svg.append(s("circle", { class: "st-" + name, cx: px, cy: py, r: 2.5 },
          s("title", {}, clock(item.start) + " · " + name + " " + millis(value))));
      });
      if (d) box.svg.insertBefore(s("path", { class: "st-line st-" + name, d: d }), box.svg.querySelector("circle"));
    });
    if (!measured.length) emptyNote(box, "No deliveries measured in the last " + rangeName + " yet");
    var last = measured[measured.length - 1];
    box.svg.setAttribute("role", "img");
    box.svg.setAttribute("aria-label", "Delivery latency per minute, last " + rangeName + ": " + (last
      ? "at " + clock(last.start) + " p50 " + millis(last.w.latency_p50_ms) + ", p99 " + millis(last.w.latency_p99_ms)
      : "no deliveries measured yet"));
    fillTable(chart, measured.slice().reverse().map(function (item) {
      var w = item.w;
      return [clock(item.start), millis(w.latency_p50_ms), millis(w.latency_p90_ms), millis(w.latency_p99_ms),
        millis(w.latency_max_ms), count(w.latency_count)];
    }));
  }

  function drawTop(tops, rangeName) {
    var chart = charts.top;
    var rowHeight = 28;
    var box = canvas(chart, Math.max(120, tops.length * rowHeight + 8), { top: 4, right: 12, bottom: 4, left: 0 });
    var labelWidth = Math.min(190, box.width * 0.45);
    var barSpace = box.width - labelWidth - 44;
    var max = tops.length ? tops[0].posts : 1;
    tops.forEach(function (t, i) {
      var about = thread(t.thread_id);
      var top = rowHeight * i;
      var label = s("text", { class: "st-label", x: 0, y: top + 19 }, clip(about.name, labelWidth));
      var barWidth = Math.max(2, (t.posts / max) * barSpace);
      var summary = "#" + t.rank + " " + about.name + " (thread " + t.thread_id + "): " +
        plural(t.posts, "post", "posts");
      box.svg.append(s("g", { class: "st-row", "data-thread-id": t.thread_id, "data-posts": t.posts },
        s("title", {}, summary),
        about.url ? s("a", { href: about.url }, label) : label,
        s("rect", { class: "st-hbar", x: labelWidth + 8, y: top + 6, width: barWidth, height: rowHeight - 10, rx: 3 }),
        s("text", { class: "st-value", x: labelWidth + 14 + barWidth, y: top + 19 }, count(t.posts))));
    });
    if (!tops.length) emptyNote(box, "No posts in the last " + rangeName + " yet");
    box.svg.setAttribute("role", "group");
    box.svg.setAttribute("aria-label", "Top threads by posts, last " + rangeName);
    chart.querySelector(".st-note").textContent = "Most posts in the last " + rangeName;
    fillTable(chart, tops.map(function (t) {
      var about = thread(t.thread_id);
      return [String(t.rank), about.url ? h("a", { href: about.url, text: about.name }) : about.name, count(t.posts)];
    }));
  }

  /** `text` cut to fit about `width` pixels of 12.5px text. */
  function clip(text, width) {
    var room = Math.max(6, Math.floor(width / 7));
    return text.length > room ? text.slice(0, room - 1) + "…" : text;
  }

  function fillTable(chart, rows) {
    chart.querySelector("tbody").replaceChildren.apply(chart.querySelector("tbody"), rows.map(function (cells) {
      return h.apply(null, ["tr", {}].concat(cells.map(function (cell) { return h("td", {}, cell); })));
    }));
  }

  /** {name, url} of a thread: its title and page (a safe http(s) URL, or "") from the API, asked
   * once; "Thread N" and no page until the API answers, or when the thread has neither. */
  function thread(id) {
    var plain = { name: "Thread " + id, url: "" };
    if (threadInfo.has(id)) return threadInfo.get(id) || plain;
    threadInfo.set(id, null);
    fetch("/api/v1/threads/" + encodeURIComponent(id), { credentials: "omit" })
      .then(function (res) { return res.ok ? res.json() : {}; })
      .catch(function () { return {}; })
      .then(function (found) {
        threadInfo.set(id, { name: found.title || plain.name, url: found.url ? safeUrl(found.url) : "" });
        draw();
      });
    return plain;
  }

  function setState(state) {
    stateLine.dataset.state = state;
    stateLine.textContent = { connecting: "Connecting…", live: "Live", reconnecting: "Reconnecting…" }[state];
  }

  function showError(text) {
    errorLine.hidden = !text;
    errorLine.textContent = text;
  }

  // ---------------------------------------------------------------------------------------------
  // Start

  form.addEventListener("submit", function (event) {
    event.preventDefault();
    if (!form.reportValidity()) return;
    show(forumInput.value.trim(), sinceSelect.value);
  });

  var redraw = null;
  new ResizeObserver(function () {
    if (redraw === null) redraw = window.requestAnimationFrame(function () { redraw = null; draw(); });
  }).observe(root);
  window.setInterval(draw, SLIDE_EVERY);

  var params = new URLSearchParams(window.location.search);
  var since = params.get("since") || root.dataset.since;
  show(params.get("forum") || root.dataset.forum, isNaN(durationMs(since)) ? root.dataset.since : since);
})(window, document);
