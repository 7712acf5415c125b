/*! threadcast embed: live comments for any page. No dependencies, no cookies.
 *
 *   <div id="threadcast_thread" data-forum="demo" data-identifier="article-42"></div>
 *   <script src="https://comments.example.com/static/threadcast.js" async></script>
 *
 * Configuration (later wins): the script tag's data-forum / data-api, the element's data
 * attributes, then a Disqus-style `threadcast_config` function (for #threadcast_thread):
 *
 *   var threadcast_config = function () {
 *     this.page.identifier = "article-42"; this.page.url = "..."; this.page.title = "...";
 *     this.forum = "demo"; this.api = "https://comments.example.com";
 *   };
 *
 * Live updates come from the push edge (the embedded edge or nginx + Nchan) over EventSource,
 * or long-poll when EventSource cannot get through. Every push message carries the post's
 * per-thread sequence number; a hole, and every (re)connection, makes the embed fetch the
 * posts it has not seen from the API, so an edge restart loses nothing. Vote messages carry seq 0
 * (they are not posts) and the post's score with its score_version: the newest score wins.
 * docs/embed.md has it all.
 */
(function (window, document) {
  "use strict";

  var existing = window.threadcast || {};
  if (existing.mount) return; // loaded twice

  var VERSION = "0.1.0";
  var SCRIPT = document.currentScript;
  var HTML_NS = "http://www.w3.org/1999/xhtml";
  var CATCH_UP_PAGE = 200;
  var SEEN_EVENTS_KEPT = 2000;
  var SSE_STRIKES = 3; // EventSource attempts that never open, while the API answers, before long-poll
  var RESUME_GIVE_UP = 2; // failed attempts in a row after which we subscribe without a resume point

  // ---------------------------------------------------------------------------------------------
  // Small helpers

  /** Create an element: h("button", {type: "button", class: "x"}, "text", child...). */
  function h(tag, attrs) {
    var node = document.createElement(tag);
    for (var name in attrs || {}) {
      var value = attrs[name];
      if (value === false || value == null) continue;
      if (name === "text") node.textContent = value;
      else node.setAttribute(name, value === true ? "" : String(value));
    }
    for (var i = 2; i < arguments.length; i++) {
      var child = arguments[i];
      if (child != null) node.append(child);
    }
    return node;
  }

  function randomKey() {
    var bytes = new Uint8Array(16);
    window.crypto.getRandomValues(bytes);
    return Array.prototype.map.call(bytes, function (b) { return (b + 256).toString(16).slice(1); }).join("");
  }

  /** Exponential backoff with jitter: about 0.5 s, 1 s, 2 s ... up to 15 s. */
  function backoff(failures) {
    var ceiling = Math.min(15000, 500 * Math.pow(2, Math.max(0, failures - 1)));
    return ceiling / 2 + Math.random() * ceiling / 2;
  }

  function plural(n, one, many) { return n + " " + (n === 1 ? one : many); }

  function trimSlash(url) { return String(url || "").replace(/\/+$/, ""); }

  /** Where this script came from, minus /static/threadcast.js: the default API base. */
  function scriptBase() {
    if (!SCRIPT || !SCRIPT.src) return "";
    var src = new URL(SCRIPT.src, window.location.href);
    var path = src.pathname.replace(/\/static\/threadcast(\.min)?\.js$/, "");
    return trimSlash(src.origin + (path === src.pathname ? "" : path));
  }

  /** Python's isoformat may omit the zone (naive UTC) and carry microseconds. */
  function parseTime(text) {
    var iso = String(text).replace(/(\.\d{3})\d+/, "$1");
    if (!/(Z|[+-]\d\d:?\d\d)$/.test(iso)) iso += "Z";
    return new Date(iso);
  }

  var relative = window.Intl && Intl.RelativeTimeFormat ? new Intl.RelativeTimeFormat(undefined, { numeric: "auto" }) : null;
  var UNITS = [["year", 31536000], ["month", 2592000], ["week", 604800], ["day", 86400], ["hour", 3600], ["minute", 60]];

  function ago(date) {
    var seconds = (date.getTime() - Date.now()) / 1000;
    if (!relative) return date.toLocaleString();
    if (Math.abs(seconds) < 45) return relative.format(0, "second");
    for (var i = 0; i < UNITS.length; i++) {
      if (Math.abs(seconds) >= UNITS[i][1] || i === UNITS.length - 1) {
        return relative.format(Math.round(seconds / UNITS[i][1]), UNITS[i][0]);
      }
    }
  }

  // ---------------------------------------------------------------------------------------------
  // Comment HTML. The server already sanitized it; the client copies only allow-listed elements
  // and attributes out of an inert parsed document (no script runs, nothing loads), so a message
  // that was tampered with on its way still renders inert.

  var ALLOWED_TAGS = ["a", "b", "strong", "i", "em", "u", "s", "p", "br", "code", "pre", "blockquote", "ul", "ol", "li"];
  var DROPPED_WITH_CONTENT = ["script", "style", "template", "noscript", "iframe", "object", "embed", "svg", "math",
    "textarea", "select", "title", "xmp", "noembed", "noframes", "head"];
  var LINK_SCHEMES = ["http:", "https:", "mailto:"];
  var MAX_DEPTH = 32;

  function sanitize(html) {
    var parsed = new DOMParser().parseFromString("<!doctype html><body>" + String(html), "text/html");
    var out = document.createDocumentFragment();
    copySafe(parsed.body, out, 0);
    return out;
  }

  function copySafe(from, to, depth) {
    for (var node = from.firstChild; node; node = node.nextSibling) {
      if (node.nodeType === 3) {
        to.appendChild(document.createTextNode(node.data));
      } else if (node.nodeType === 1 && depth < MAX_DEPTH) {
        var tag = node.namespaceURI === HTML_NS ? node.localName : "";
        if (ALLOWED_TAGS.indexOf(tag) >= 0) {
          var copy = document.createElement(tag);
          if (tag === "a") copyLink(node, copy);
          to.appendChild(copy);
          copySafe(node, copy, depth + 1);
        } else if (DROPPED_WITH_CONTENT.indexOf(tag || node.localName) < 0) {
          copySafe(node, to, depth + 1); // unknown wrapper: keep its (sanitized) content
        }
      }
    }
  }

  function copyLink(from, to) {
    var url;
    try { url = new URL(from.getAttribute("href") || ""); } catch (e) { url = null; }
    if (url && LINK_SCHEMES.indexOf(url.protocol) >= 0) {
      to.href = url.href;
      to.rel = "nofollow noopener noreferrer ugc";
      to.target = "_blank";
    }
    if (from.hasAttribute("title")) to.title = from.getAttribute("title");
  }

  /** What the reader typed (plain text) as comment HTML: escaped, paragraphs, line breaks, links. */
  var URL_IN_TEXT = /\bhttps?:\/\/[^\s<>"']*[^\s<>"'.,:;!?)\]]/g;

  function escapeHtml(text) {
    return text.replace(/[&<>"']/g, function (c) {
      return { "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c];
    });
  }

  function textToHtml(text) {
    return text.trim().split(/\n\s*\n/).map(function (paragraph) {
      var html = "", last = 0, match;
      URL_IN_TEXT.lastIndex = 0;
      while ((match = URL_IN_TEXT.exec(paragraph))) {
        var url = escapeHtml(match[0]);
        html += escapeHtml(paragraph.slice(last, match.index)) + '<a href="' + url + '">' + url + "</a>";
        last = match.index + match[0].length;
      }
      html += escapeHtml(paragraph.slice(last));
      return "<p>" + html.trim().replace(/\n/g, "<br>") + "</p>";
    }).join("");
  }

  // ---------------------------------------------------------------------------------------------
  // Configuration

  function readConfig(element, extra) {
    var data = element.dataset;
    var script = SCRIPT ? SCRIPT.dataset : {};
    var config = {
      forum: data.forum || script.forum || "",
      api: data.api || script.api || scriptBase(),
      push: data.push || script.push || "",
      theme: data.theme || script.theme || "auto",
      transport: data.transport || "auto",
      pageSize: Number(data.pageSize) || 50,
      page: { identifier: data.identifier || "", url: data.url || "", title: data.title || "" },
      callbacks: { onReady: [], onNewComment: [] },
    };
    if (typeof extra === "function") extra.call(config);
    else if (extra) mergeConfig(config, extra);
    var here = window.location.href.split("#")[0];
    config.page.url = String(config.page.url || here).slice(0, 2048);
    config.page.identifier = String(config.page.identifier || config.page.url);
    config.page.title = String(config.page.title || document.title || "").slice(0, 300);
    config.api = trimSlash(config.api);
    config.push = trimSlash(config.push) || config.api;
    return config;
  }

  function mergeConfig(config, extra) {
    for (var key in extra) {
      if (key === "page" || key === "callbacks") Object.assign(config[key], extra[key]);
      else config[key] = extra[key];
    }
  }

  // ---------------------------------------------------------------------------------------------
  // The HTTP API

  function ApiError(status, code, message) {
    this.status = status;
    this.code = code;
    this.message = message;
  }

  function Api(base) { this.base = base + "/api/v1"; }

  Api.prototype.request = function (method, path, body, headers) {
    var init = { method: method, credentials: "omit", cache: "no-store", headers: headers || {} };
    if (body !== undefined) {
      init.headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    return fetch(this.base + path, init).then(
      function (res) {
        return res.json().catch(function () { return {}; }).then(function (json) {
          if (res.ok) return json;
          var err = json.error || {};
          throw new ApiError(res.status, err.code || "http_" + res.status, err.message || res.statusText);
        });
      },
      function () { throw new ApiError(0, "network", "cannot reach the comment server"); }
    );
  };

  Api.prototype.thread = function (config) {
    return this.request("POST", "/threads", {
      forum: config.forum, identifier: config.page.identifier, title: config.page.title, url: config.page.url,
    });
  };

  Api.prototype.posts = function (threadId, params) {
    return this.request("GET", "/threads/" + threadId + "/posts?" + new URLSearchParams(params));
  };

  Api.prototype.createPost = function (threadId, body, key) {
    return this.request("POST", "/threads/" + threadId + "/posts", body, { "Idempotency-Key": key });
  };

  Api.prototype.vote = function (postId, body) {
    return this.request("POST", "/posts/" + postId + "/votes", body);
  };

  // ---------------------------------------------------------------------------------------------
  // The live connection: EventSource, or long-poll, both in Nchan's subscriber protocol. It owns
  // reconnection (with backoff) and resumption (the last message id); after every (re)connect it
  // calls catchUp so the thread fetches from the API whatever the edge could not replay.

  function Live(url, options) {
    this.url = url;
    // {transport, onMessage(text), onState(state), catchUp() -> Promise<bool: the API answered>}
    this.options = options;
    this.mode = options.transport === "longpoll" || !window.EventSource ? "longpoll" : "eventsource";
    this.lastId = null; // EventSource: the last event id; long-poll: the Etag
    this.lastModified = null;
    this.failures = 0;
    this.strikes = 0;
    this.stopped = false;
    this.timer = null;
    this.source = null;
    this.abort = null;
    this.polling = false; // a long-poll subscription is under way
    this.onOnline = this.retryNow.bind(this);
    window.addEventListener("online", this.onOnline);
  }

  Live.prototype.start = function () {
    if (this.stopped) return;
    this.timer = null;
    if (this.mode === "eventsource") this.openEventSource();
    else this.poll();
  };

  Live.prototype.stop = function () {
    this.stopped = true;
    clearTimeout(this.timer);
    window.removeEventListener("online", this.onOnline);
    if (this.source) this.source.close();
    if (this.abort) this.abort.abort();
  };

  Live.prototype.retryNow = function () {
    if (this.timer === null) return;
    clearTimeout(this.timer);
    this.start();
  };

  Live.prototype.scheduleRetry = function () {
    if (this.stopped) return;
    this.failures += 1;
    // Resuming only saves requests; the API catch-up is what guarantees nothing is lost. After
    // two failures in a row, subscribe afresh: an edge that cannot take our resume point (or a
    // CORS setup that refuses the resume headers) cannot keep us offline.
    if (this.failures >= RESUME_GIVE_UP) this.lastId = this.lastModified = null;
    this.options.onState(this.failures > 3 ? "offline" : "reconnecting");
    this.timer = setTimeout(this.start.bind(this), backoff(this.failures));
  };

  Live.prototype.connected = function () {
    this.failures = 0;
    this.strikes = 0;
    this.options.onState("live");
  };

  Live.prototype.openEventSource = function () {
    var self = this, opened = false;
    var url = this.lastId ? withParam(this.url, "last_event_id", this.lastId) : this.url;
    var source = (this.source = new EventSource(url));
    source.onopen = function () {
      opened = true;
      self.connected();
      self.options.catchUp();
    };
    source.onmessage = function (event) {
      if (event.lastEventId) self.lastId = event.lastEventId;
      self.options.onMessage(event.data);
    };
    source.onerror = function () {
      // The browser would retry on its own, at a fixed pace; we retry with backoff instead.
      source.close();
      self.source = null;
      if (self.stopped) return;
      if (opened || self.options.transport !== "auto") return self.scheduleRetry();
      self.options.catchUp().then(function (apiAnswers) {
        // The API answers but the stream never opens: something between (a proxy) breaks it.
        if (apiAnswers && ++self.strikes >= SSE_STRIKES) {
          self.mode = "longpoll";
          self.lastId = null; // an EventSource id; the API fills the gap instead
        }
        self.scheduleRetry();
      });
    };
  };

  Live.prototype.poll = function () {
    var self = this;
    var headers = {};
    if (this.lastId) headers["If-None-Match"] = this.lastId;
    if (this.lastModified) headers["If-Modified-Since"] = this.lastModified;
    var abort = (this.abort = new AbortController());
    var answered = false;
    var fresh = !this.polling;
    var request = fetch(this.url, { headers: headers, cache: "no-store", credentials: "omit", signal: abort.signal });
    if (fresh) {
      // A new subscription. Long-poll cannot tell when the edge holds it: catch up from the API
      // now, and count as live when the API answered while the poll still waits.
      this.polling = true;
      this.options.catchUp().then(function (ok) {
        if (ok && !answered && self.abort === abort) self.connected();
      });
    }
    request.then(function (res) {
      answered = true;
      if (res.status === 200 || res.status === 304 || res.status === 408) self.connected();
      // The edge surely held this subscription: catch up once more for what was published while
      // the request travelled (a message, status 200, shows such a hole by its seq instead).
      if (fresh && res.status !== 200) self.options.catchUp();
      if (res.status === 200) {
        self.lastId = res.headers.get("Etag") || self.lastId;
        self.lastModified = res.headers.get("Last-Modified") || self.lastModified;
        return res.text().then(function (text) {
          self.options.onMessage(text);
          self.start();
        });
      }
      if (res.status === 304 || res.status === 408) return self.start(); // nothing new yet
      if (res.status === 409 || res.status === 412) {
        // The edge cannot resume from our point: subscribe fresh; catchUp fetches the rest.
        self.lastId = self.lastModified = null;
        self.polling = false;
        return self.start();
      }
      throw new Error("long-poll answered " + res.status);
    }).catch(function () {
      answered = true;
      if (self.stopped) return;
      self.polling = false;
      self.scheduleRetry();
    });
  };

  function withParam(url, name, value) {
    return url + (url.indexOf("?") < 0 ? "?" : "&") + name + "=" + encodeURIComponent(value);
  }

  // ---------------------------------------------------------------------------------------------
  // The styles, shared by every thread on the page. Themes are CSS variables; a site overrides
  // them on its own element (`#threadcast_thread { --tc-accent: #c0392b }`).

  var LIGHT = "--tc-fg:#1f2328;--tc-muted:#636c76;--tc-line:#e2e5e9;--tc-surface:#f6f8fa;--tc-input:#fff;" +
    "--tc-accent:#2f6feb;--tc-accent-fg:#fff;--tc-danger:#cf222e;--tc-ok:#1a7f37;--tc-new:rgba(47,111,235,.09);color-scheme:light;";
  var DARK = "--tc-fg:#e6e8eb;--tc-muted:#9199a3;--tc-line:#30363d;--tc-surface:#161b22;--tc-input:#0d1117;" +
    "--tc-accent:#6ea2ff;--tc-accent-fg:#0d1117;--tc-danger:#ff7b72;--tc-ok:#3fb950;--tc-new:rgba(110,162,255,.13);color-scheme:dark;";
  var CSS = [
    ":where(.tc){" + LIGHT + "--tc-radius:10px;--tc-font:inherit;--tc-indent:2.75em}",
    ":where(.tc[data-tc-theme=dark]){" + DARK + "}",
    "@media (prefers-color-scheme:dark){:where(.tc[data-tc-theme=auto]){" + DARK + "}}",
    ".tc{font-family:var(--tc-font);color:var(--tc-fg);line-height:1.55;font-size:1rem;position:relative}",
    ".tc *,.tc *::before,.tc *::after{box-sizing:border-box}",
    ".tc [hidden]{display:none!important}",
    ".tc-head{display:flex;align-items:baseline;justify-content:space-between;gap:1em;border-bottom:1px solid var(--tc-line);padding-bottom:.6em;margin-bottom:1.1em}",
    ".tc-title{font-size:1.1em;font-weight:650;margin:0;letter-spacing:-.01em}",
    ".tc-status{font-size:.8em;color:var(--tc-muted);display:inline-flex;align-items:center;gap:.45em;white-space:nowrap}",
    ".tc-dot{width:.55em;height:.55em;border-radius:50%;background:var(--tc-muted)}",
    ".tc[data-tc-state=live] .tc-dot{background:var(--tc-ok);box-shadow:0 0 0 3px color-mix(in srgb,var(--tc-ok) 22%,transparent)}",
    ".tc[data-tc-state=reconnecting] .tc-dot,.tc[data-tc-state=offline] .tc-dot{background:var(--tc-danger)}",
    ".tc-form{display:grid;gap:.7em;margin:0 0 1.8em;padding:1em 1.1em 1.1em;background:var(--tc-surface);border:1px solid var(--tc-line);border-radius:var(--tc-radius)}",
    ".tc-reply-form{margin:.7em 0 .3em;padding:.8em .9em .9em}",
    ".tc-field{display:grid;gap:.25em;font-size:.85em;font-weight:600;color:var(--tc-muted)}",
    ".tc-input{font:inherit;font-size:1rem;font-weight:400;color:var(--tc-fg);background:var(--tc-input);border:1px solid var(--tc-line);border-radius:calc(var(--tc-radius) - 2px);padding:.55em .7em;width:100%;transition:border-color .15s,box-shadow .15s}",
    ".tc-name{max-width:18em}",
    "textarea.tc-input{resize:vertical;min-height:4.8em}",
    ".tc-input:focus{outline:none;border-color:var(--tc-accent);box-shadow:0 0 0 3px color-mix(in srgb,var(--tc-accent) 25%,transparent)}",
    ".tc-row{display:flex;align-items:center;gap:.8em;flex-wrap:wrap}",
    ".tc-hint{font-size:.8em;color:var(--tc-muted)}",
    ".tc-btn{font:inherit;font-size:.9em;font-weight:600;border-radius:999px;padding:.5em 1.15em;cursor:pointer;border:1px solid transparent;background:var(--tc-accent);color:var(--tc-accent-fg)}",
    ".tc-btn:hover{filter:brightness(1.08)}",
    ".tc-btn[disabled]{opacity:.6;cursor:progress}",
    ".tc-btn-quiet{background:transparent;color:var(--tc-fg);border-color:var(--tc-line)}",
    ".tc :focus-visible{outline:2px solid var(--tc-accent);outline-offset:2px}",
    ".tc-error{color:var(--tc-danger);font-size:.85em;margin:0}",
    ".tc-error:empty{display:none}",
    ".tc-list,.tc-replies{list-style:none;margin:0;padding:0}",
    ".tc-replies{margin-left:var(--tc-indent);border-left:2px solid var(--tc-line);padding-left:1em}",
    ".tc-replies .tc-replies .tc-replies .tc-replies{margin-left:0;border-left:0;padding-left:0}",
    ".tc-post{display:flex;gap:.8em;padding:.85em .6em;margin:0 -.6em;border-radius:var(--tc-radius)}",
    ".tc-post:focus{outline:none}",
    ".tc-post:focus-visible{outline:2px solid var(--tc-accent);outline-offset:0}",
    ".tc-fresh{animation:tc-fresh 4s ease-out}",
    "@keyframes tc-fresh{from{background:var(--tc-new)}to{background:transparent}}",
    "@media (prefers-reduced-motion:reduce){.tc-fresh{animation:none}}",
    ".tc-avatar{flex:none;width:2.1em;height:2.1em;border-radius:50%;display:grid;place-items:center;font-weight:650;font-size:.95em;color:#fff;text-transform:uppercase;user-select:none}",
    ".tc-body{min-width:0;flex:1}",
    ".tc-meta{display:flex;flex-wrap:wrap;align-items:baseline;gap:.15em .5em;font-size:.85em;color:var(--tc-muted)}",
    ".tc-author{color:var(--tc-fg);font-weight:650;font-size:1.06em;overflow-wrap:anywhere}",
    ".tc-message{overflow-wrap:anywhere;margin-top:.15em}",
    ".tc-message>:first-child{margin-top:0}.tc-message>:last-child{margin-bottom:0}",
    ".tc-message p,.tc-message ul,.tc-message ol,.tc-message pre,.tc-message blockquote{margin:.45em 0}",
    ".tc-message a{color:var(--tc-accent)}",
    ".tc-message blockquote{border-left:3px solid var(--tc-line);padding-left:.8em;color:var(--tc-muted)}",
    ".tc-message code,.tc-message pre{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;font-size:.9em;background:var(--tc-surface);border-radius:4px}",
    ".tc-message code{padding:.1em .3em}.tc-message pre{padding:.7em;overflow:auto}",
    ".tc-actions{margin-top:.25em;display:flex;align-items:center;gap:.9em}",
    ".tc-vote{display:inline-flex;align-items:center;gap:.1em}",
    ".tc-vote .tc-link{padding:.1em .35em;border-radius:4px}",
    ".tc-vote [aria-pressed=true]{color:var(--tc-accent)}",
    ".tc-vote .tc-down[aria-pressed=true]{color:var(--tc-danger)}",
    ".tc-score{font-size:.85em;font-weight:650;min-width:1.5em;text-align:center;font-variant-numeric:tabular-nums}",
    ".tc-link{font:inherit;font-size:.85em;font-weight:600;color:var(--tc-muted);background:none;border:0;padding:.1em 0;cursor:pointer}",
    ".tc-link:hover{color:var(--tc-accent)}",
    ".tc-bar-wrap{position:sticky;top:.75em;z-index:2;height:0;display:flex;justify-content:center;align-items:flex-start}",
    ".tc-bar{box-shadow:0 6px 18px rgba(0,0,0,.22);white-space:nowrap}",
    ".tc-more{display:block;margin:1.2em auto 0}",
    ".tc-empty{color:var(--tc-muted);text-align:center;padding:1.5em 0;margin:0}",
    ".tc-foot{font-size:.75em;color:var(--tc-muted);text-align:right;margin:1.5em 0 0}",
    ".tc-sr{position:absolute;width:1px;height:1px;overflow:hidden;clip:rect(0 0 0 0);clip-path:inset(50%);white-space:nowrap}",
  ].join("\n");

  function injectStyles() {
    if (document.getElementById("threadcast-style")) return;
    document.head.appendChild(h("style", { id: "threadcast-style", text: CSS }));
  }

  function avatarColor(name) {
    var hash = 0;
    for (var i = 0; i < name.length; i++) hash = (hash * 31 + name.charCodeAt(i)) | 0;
    return "hsl(" + (Math.abs(hash) % 360) + " 52% 46%)";
  }

  // ---------------------------------------------------------------------------------------------
  // One thread on the page

  var mounted = new WeakMap();
  var counter = 0;

  function Thread(root, config) {
    this.root = root;
    this.config = config;
    this.uid = "tc" + ++counter;
    this.api = new Api(config.api);
    this.thread = null;
    this.posts = new Map(); // post id -> {post, item, article}
    this.waiting = new Map(); // parent id -> [post ids] shown at the top level until the parent loads
    this.seenEvents = new Set();
    this.scores = new Map(); // post id -> the newest score pushed for a post not shown yet
    this.liveSeq = 0; // every post with seq <= liveSeq is rendered or reachable with "load more"
    this.ahead = new Set(); // seqs rendered above liveSeq
    this.total = 0; // the comment count shown in the header
    this.totalSeq = 0; // posts with a seq up to this one are in `total`
    this.nextCursor = null;
    this.unseen = [];
    this.announce = [];
    this.author = "";
    this.catching = null;
    this.catchAgain = false;
    this.live = null;
    this.clock = null; // refreshes the "5 minutes ago" texts
    this.retryTimer = null;
    this.announceTimer = null;
    this.destroyed = false;
  }

  Thread.prototype.emit = function (name, detail) {
    this.root.dispatchEvent(new CustomEvent("threadcast:" + name, { detail: detail, bubbles: true }));
  };

  Thread.prototype.callback = function (name, arg) {
    (this.config.callbacks[name] || []).forEach(function (fn) {
      try { fn(arg); } catch (e) { setTimeout(function () { throw e; }); }
    });
  };

  Thread.prototype.setState = function (state) {
    var labels = { connecting: "Connecting…", live: "Live", reconnecting: "Reconnecting…", offline: "Offline, retrying…" };
    if (this.root.dataset.tcState === state) return;
    this.root.dataset.tcState = state;
    this.statusText.textContent = labels[state];
    this.emit("status", { state: state });
  };

  Thread.prototype.build = function () {
    var root = this.root;
    root.classList.add("tc");
    root.dataset.tcTheme = this.config.theme;
    this.count = h("span", { text: "0" });
    this.noun = h("span", { text: " comments" });
    this.statusText = h("span", { class: "tc-status-text" });
    this.bar = h("button", { type: "button", class: "tc-btn tc-bar", hidden: true });
    this.list = h("ol", { class: "tc-list", "aria-labelledby": this.uid + "-title" });
    this.empty = h("p", { class: "tc-empty", hidden: true, text: "No comments yet. Start the conversation." });
    this.more = h("button", { type: "button", class: "tc-btn tc-btn-quiet tc-more", hidden: true, text: "Load more comments" });
    this.liveRegion = h("div", { class: "tc-sr", "aria-live": "polite", "aria-atomic": "true" });
    this.form = this.buildForm(null);
    this.form.hidden = true;
    root.replaceChildren(
      h("div", { class: "tc-head" },
        h("h2", { class: "tc-title", id: this.uid + "-title" }, this.count, this.noun),
        h("span", { class: "tc-status" }, h("span", { class: "tc-dot", "aria-hidden": "true" }), this.statusText)),
      this.form,
      h("div", { class: "tc-bar-wrap" }, this.bar),
      this.list, this.empty, this.more, this.liveRegion,
      h("p", { class: "tc-foot", text: "Live comments by threadcast" })
    );
    this.setState("connecting");
    this.bar.addEventListener("click", this.showUnseen.bind(this));
    this.more.addEventListener("click", this.loadMore.bind(this));
    this.list.addEventListener("click", this.onListClick.bind(this));
    this.observer = new IntersectionObserver(this.onVisibility.bind(this));
    this.clock = setInterval(this.refreshTimes.bind(this), 60000);
  };

  // -- loading ----------------------------------------------------------------------------------

  Thread.prototype.start = function (attempt) {
    var self = this;
    if (!this.config.forum) return this.fail(new ApiError(0, "config", "threadcast: no forum configured (data-forum)"));
    this.api.thread(this.config).then(function (thread) {
      self.thread = thread;
      return self.api.posts(thread.id, { order: "desc", limit: self.config.pageSize });
    }).then(function (page) {
      if (self.destroyed) return;
      self.nextCursor = page.next_cursor;
      self.liveSeq = page.posts.length ? page.posts[0].seq : 0;
      self.total = self.totalSeq = Math.max(self.thread.post_count, self.liveSeq);
      page.posts.slice().reverse().forEach(function (post) { self.upsert(post, "initial"); });
      self.form.hidden = false;
      self.updateChrome();
      self.connect();
      self.emit("ready", { thread: self.thread });
      self.callback("onReady", self.thread);
    }).catch(function (err) {
      if (self.destroyed) return;
      if (err.status >= 400 && err.status < 500) return self.fail(err);
      self.setState("offline");
      self.retryTimer = setTimeout(function () { self.start(attempt + 1); }, backoff(attempt + 1));
    });
  };

  Thread.prototype.fail = function (err) {
    this.setState("offline");
    this.list.replaceChildren(h("li", { class: "tc-error", role: "alert", text: err.message }));
    this.emit("error", { code: err.code, message: err.message });
  };

  Thread.prototype.connect = function () {
    var self = this;
    this.live = new Live(this.config.push + "/sub/thread:" + this.thread.id, {
      transport: this.config.transport,
      onMessage: this.onPush.bind(this),
      onState: this.setState.bind(this),
      catchUp: this.catchUp.bind(this),
    });
    this.live.start();
  };

  Thread.prototype.loadMore = function () {
    var self = this;
    if (!this.nextCursor) return;
    this.more.disabled = true;
    var before = this.list.children.length;
    this.api.posts(this.thread.id, { order: "desc", limit: this.config.pageSize, cursor: this.nextCursor })
      .then(function (page) {
        self.nextCursor = page.next_cursor;
        page.posts.slice().reverse().forEach(function (post) { self.upsert(post, "more"); });
        self.updateChrome();
        if (!self.nextCursor) {
          var first = self.list.children[before];
          if (first) first.querySelector(".tc-post").focus();
        }
      })
      .catch(function (err) { self.say(err.message); })
      .then(function () { self.more.disabled = false; });
  };

  /** Fetch every post after liveSeq from the API. Resolves true when the API answered. */
  Thread.prototype.catchUp = function () {
    var self = this;
    if (this.catching) {
      this.catchAgain = true;
      return this.catching;
    }
    var newest = 0;
    var fetchFrom = function (params) {
      return self.api.posts(self.thread.id, params).then(function (page) {
        page.posts.forEach(function (post) {
          self.upsert(post, "live");
          newest = Math.max(newest, post.seq);
        });
        if (page.next_cursor) return fetchFrom({ order: "asc", limit: CATCH_UP_PAGE, cursor: page.next_cursor });
      });
    };
    this.catching = fetchFrom({ order: "asc", limit: CATCH_UP_PAGE, after_seq: this.liveSeq }).then(
      function () {
        // The API gave every post up to `newest`: a seq still missing below it does not exist.
        self.skipTo(newest);
        return true;
      },
      function () { return false; }
    ).then(function (answered) {
      self.catching = null;
      if (self.catchAgain && !self.destroyed) {
        self.catchAgain = false;
        return self.catchUp();
      }
      return answered;
    });
    return this.catching;
  };

  // -- live messages ----------------------------------------------------------------------------

  Thread.prototype.onPush = function (text) {
    var message;
    try { message = JSON.parse(text); } catch (e) { return; }
    if (!message || !message.data || this.seenEvents.has(message.id)) return;
    this.seenEvents.add(message.id);
    if (this.seenEvents.size > SEEN_EVENTS_KEPT) this.seenEvents.delete(this.seenEvents.values().next().value);
    var data = message.data, type = String(message.type);
    if (data.thread_id !== this.thread.id) return;
    if (type.indexOf("vote.") === 0) return this.applyScore(data.post_id, data); // seq 0: no hole, no post
    if (type.indexOf("post.") !== 0) return;
    this.upsert(data, "live");
    if (this.ahead.size) this.catchUp(); // a hole below this message: fetch what was missed
  };

  /** Record a seq seen live; liveSeq moves over every contiguous one. */
  Thread.prototype.noteSeq = function (seq) {
    if (seq > this.liveSeq) this.ahead.add(seq);
    this.advance();
  };

  /** Everything up to `seq` is known to be shown (a completed catch-up said so). */
  Thread.prototype.skipTo = function (seq) {
    if (seq <= this.liveSeq) return;
    this.liveSeq = seq;
    var ahead = this.ahead;
    ahead.forEach(function (s) { if (s <= seq) ahead.delete(s); });
    this.advance();
  };

  Thread.prototype.advance = function () {
    while (this.ahead.has(this.liveSeq + 1)) this.ahead.delete(++this.liveSeq);
  };

  /** Show a post, or apply a newer version of one. `source`: initial, more, live or own. */
  Thread.prototype.upsert = function (post, source) {
    if (typeof post.id !== "number" || typeof post.seq !== "number") return;
    var known = this.posts.get(post.id);
    if (source !== "more" && source !== "initial") this.noteSeq(post.seq);
    if (known) {
      this.applyScore(post.id, post);
      if ((post.version || 0) <= (known.post.version || 0)) return;
      known.post = post;
      known.edited = true;
      this.fillPost(known);
      this.emit("post", { post: post, source: source, edited: true });
      return;
    }
    var entry = this.renderPost(post);
    this.posts.set(post.id, entry);
    var kept = this.scores.get(post.id);
    this.scores.delete(post.id);
    if (kept) this.applyScore(post.id, kept);
    this.place(entry);
    if (post.seq > this.totalSeq) this.total += 1;
    if (source === "live" || source === "own") entry.article.classList.add("tc-fresh");
    if (source === "live") {
      this.observer.observe(entry.article);
      this.queueAnnouncement(post);
    }
    this.updateChrome();
    this.emit("post", { post: post, source: source, edited: false });
  };

  // -- rendering --------------------------------------------------------------------------------

  Thread.prototype.renderPost = function (post) {
    var entry = {
      post: post,
      avatar: h("span", { class: "tc-avatar", "aria-hidden": "true" }),
      author: h("span", { class: "tc-author" }),
      context: h("span", { class: "tc-context" }),
      time: h("time"),
      message: h("div", { class: "tc-message" }),
      replyButton: h("button", { type: "button", class: "tc-link", "data-action": "reply", "aria-expanded": "false", text: "Reply" }),
      up: voteButton(1),
      down: voteButton(-1),
      scoreText: h("span", { class: "tc-score" }),
      score: post.score || 0, // the server's, at scoreVersion
      scoreVersion: post.score_version || 0,
      mine: 0, // this reader's vote as shown
      confirmed: 0, // ... and as the server last confirmed it
      optimistic: null, // the score shown while a vote of ours is on its way
      sending: false,
      replies: null,
      replyForm: null,
      edited: false,
    };
    entry.article = h("article", { class: "tc-post", tabindex: "-1" },
      entry.avatar,
      h("div", { class: "tc-body" },
        h("div", { class: "tc-meta" }, entry.author, entry.context, entry.time),
        entry.message,
        h("div", { class: "tc-actions" },
          h("span", { class: "tc-vote", role: "group", "aria-label": "Votes" }, entry.up, entry.scoreText, entry.down),
          entry.replyButton)));
    entry.item = h("li", { class: "tc-item", id: this.uid + "-post-" + post.id, "data-post-id": post.id, "data-seq": post.seq }, entry.article);
    this.fillPost(entry);
    showScore(entry);
    return entry;
  };

  function voteButton(value) {
    return h("button", {
      type: "button", class: "tc-link tc-" + (value > 0 ? "up" : "down"), "data-action": "vote", "data-value": value,
      "aria-pressed": "false", "aria-label": value > 0 ? "Upvote" : "Downvote", text: value > 0 ? "▲" : "▼",
    });
  }

  function showScore(entry) {
    entry.scoreText.textContent = String(entry.optimistic === null ? entry.score : entry.optimistic);
    entry.up.setAttribute("aria-pressed", String(entry.mine === 1));
    entry.down.setAttribute("aria-pressed", String(entry.mine === -1));
  }

  /** Show a post's score from `tally` (a post, a vote message or a vote answer) if it is newer
   * than the shown one; the newest score for a post not shown yet is kept until it is. */
  Thread.prototype.applyScore = function (postId, tally) {
    var entry = this.posts.get(postId);
    if (!entry) {
      var kept = this.scores.get(postId);
      if (!kept || kept.score_version < tally.score_version) this.scores.set(postId, tally);
      if (this.scores.size > SEEN_EVENTS_KEPT) this.scores.delete(this.scores.keys().next().value);
    } else if (tally.score_version > entry.scoreVersion) {
      entry.score = tally.score;
      entry.scoreVersion = tally.score_version;
      showScore(entry);
    }
  };

  Thread.prototype.fillPost = function (entry) {
    var post = entry.post;
    var name = String(post.author_name || "anonymous");
    entry.avatar.textContent = name.trim().charAt(0) || "?";
    entry.avatar.style.background = avatarColor(name);
    entry.author.textContent = name;
    var date = parseTime(post.created_at);
    entry.time.dateTime = isNaN(date) ? "" : date.toISOString();
    entry.time.title = date.toLocaleString();
    showTime(entry);
    entry.message.replaceChildren(sanitize(post.message));
    entry.article.setAttribute("aria-label", "Comment by " + name);
  };

  function showTime(entry) {
    var date = parseTime(entry.post.created_at);
    entry.time.textContent = (isNaN(date) ? "" : ago(date)) + (entry.edited ? " · edited" : "");
  }

  Thread.prototype.refreshTimes = function () {
    this.posts.forEach(showTime);
  };

  /** Put a post where it belongs: top level newest first, replies under their parent oldest first. */
  Thread.prototype.place = function (entry) {
    var post = entry.post;
    var parent = post.parent_id ? this.posts.get(post.parent_id) : null;
    if (parent) {
      entry.context.textContent = "↪ " + parent.post.author_name;
      insertSorted(this.repliesOf(parent), entry.item, post.seq, false);
    } else {
      if (post.parent_id) {
        entry.context.textContent = "↪ an earlier comment";
        var wait = this.waiting.get(post.parent_id) || [];
        wait.push(post.id);
        this.waiting.set(post.parent_id, wait);
      }
      insertSorted(this.list, entry.item, post.seq, true);
    }
    var orphans = this.waiting.get(post.id);
    if (orphans) {
      this.waiting.delete(post.id);
      var self = this;
      orphans.forEach(function (id) { self.place(self.posts.get(id)); });
    }
  };

  Thread.prototype.repliesOf = function (entry) {
    if (!entry.replies) {
      entry.replies = h("ol", { class: "tc-replies", "aria-label": "Replies to " + entry.post.author_name });
      entry.item.appendChild(entry.replies);
    }
    return entry.replies;
  };

  function insertSorted(list, item, seq, newestFirst) {
    for (var child = list.firstElementChild; child; child = child.nextElementSibling) {
      var other = Number(child.dataset.seq);
      if (newestFirst ? other < seq : other > seq) return list.insertBefore(item, child);
    }
    list.appendChild(item);
  }

  Thread.prototype.updateChrome = function () {
    this.count.textContent = String(this.total);
    this.noun.textContent = this.total === 1 ? " comment" : " comments";
    this.empty.hidden = this.posts.size > 0;
    this.more.hidden = !this.nextCursor;
  };

  // -- "N new comments" and announcements -------------------------------------------------------

  Thread.prototype.onVisibility = function (entries) {
    var self = this;
    entries.forEach(function (change) {
      var at = self.unseen.indexOf(change.target);
      if (change.isIntersecting) {
        self.observer.unobserve(change.target);
        if (at >= 0) self.unseen.splice(at, 1);
      } else if (at < 0) {
        self.unseen.push(change.target);
      }
    });
    this.updateBar();
  };

  Thread.prototype.updateBar = function () {
    var n = this.unseen.length;
    this.bar.hidden = n === 0;
    this.bar.textContent = n ? "↑ " + plural(n, "new comment", "new comments") : "";
  };

  Thread.prototype.showUnseen = function () {
    this.unseen.sort(function (a, b) {
      return a.compareDocumentPosition(b) & Node.DOCUMENT_POSITION_FOLLOWING ? -1 : 1;
    });
    var target = this.unseen.shift();
    if (!target) return;
    this.observer.unobserve(target);
    this.updateBar();
    var still = window.matchMedia && window.matchMedia("(prefers-reduced-motion: reduce)").matches;
    target.scrollIntoView({ block: "center", behavior: still ? "auto" : "smooth" });
    target.focus({ preventScroll: true });
  };

  Thread.prototype.queueAnnouncement = function (post) {
    var self = this;
    this.announce.push(post.author_name);
    if (this.announce.length > 1) return;
    this.announceTimer = setTimeout(function () {
      var names = self.announce;
      self.announce = [];
      self.say(names.length === 1 ? "New comment from " + names[0] : plural(names.length, "new comment", "new comments"));
    }, 800);
  };

  Thread.prototype.say = function (text) {
    this.liveRegion.textContent = text;
  };

  // -- forms ------------------------------------------------------------------------------------

  Thread.prototype.buildForm = function (parent) {
    var self = this;
    var id = this.uid + "-" + (parent ? "reply-" + parent.post.id : "new");
    var name = h("input", {
      class: "tc-input tc-name", id: id + "-name", name: "author_name", required: true, maxlength: 100,
      autocomplete: "nickname", placeholder: "Your name",
    });
    var text = h("textarea", {
      class: "tc-input", id: id + "-message", name: "message", required: true, rows: 3,
      placeholder: parent ? "Write a reply…" : "Join the discussion…", "aria-describedby": id + "-hint",
    });
    var submit = h("button", { type: "submit", class: "tc-btn", text: parent ? "Reply" : "Post comment" });
    var error = h("p", { class: "tc-error", role: "alert" });
    var row = h("div", { class: "tc-row" }, submit);
    if (parent) {
      var cancel = h("button", { type: "button", class: "tc-btn tc-btn-quiet", text: "Cancel" });
      cancel.addEventListener("click", function () { self.closeReply(parent); });
      row.appendChild(cancel);
    }
    row.appendChild(h("span", { class: "tc-hint", id: id + "-hint", text: "Ctrl+Enter to send" }));
    var form = h("form", { class: "tc-form" + (parent ? " tc-reply-form" : ""), novalidate: true, "aria-label": parent ? "Reply to " + parent.post.author_name : "Post a comment" },
      h("label", { class: "tc-field", for: name.id }, "Name", name),
      h("label", { class: "tc-field", for: text.id }, parent ? "Reply" : "Comment", text),
      error, row);
    name.value = this.author;
    var pending = { key: null, body: "" };
    form.addEventListener("submit", function (event) {
      event.preventDefault();
      self.submit({ form: form, name: name, text: text, submit: submit, error: error, pending: pending, parent: parent });
    });
    text.addEventListener("keydown", function (event) {
      if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) {
        event.preventDefault();
        form.requestSubmit();
      } else if (event.key === "Escape" && parent) {
        self.closeReply(parent);
      }
    });
    return form;
  };

  Thread.prototype.submit = function (f) {
    var self = this;
    if (f.submit.disabled) return;
    var author = f.name.value.trim(), text = f.text.value.trim();
    f.error.textContent = !author ? "Please enter your name." : !text ? "Please write a comment." : "";
    if (f.error.textContent) return (author ? f.text : f.name).focus();
    var body = { author_name: author, message: textToHtml(text) };
    if (f.parent) body.parent_id = f.parent.post.id;
    var signature = JSON.stringify(body);
    // One key per submission: a retry of the same text after a failure reuses it, so the
    // server never saves the comment twice.
    if (f.pending.body !== signature) f.pending = Object.assign(f.pending, { key: randomKey(), body: signature });
    f.submit.disabled = true;
    f.form.setAttribute("aria-busy", "true");
    this.api.createPost(this.thread.id, body, f.pending.key).then(function (post) {
      f.pending.body = "";
      f.text.value = "";
      self.author = author;
      self.upsert(post, "own");
      self.say("Your comment was posted.");
      self.callback("onNewComment", { id: post.id, text: text });
      var entry = self.posts.get(post.id);
      if (f.parent) self.closeReply(f.parent, entry);
      else entry.article.scrollIntoView({ block: "nearest" });
    }, function (err) {
      f.error.textContent = err.status === 0 ? "Could not reach the server. Your comment is kept; try again." : err.message;
    }).then(function () {
      f.submit.disabled = false;
      f.form.removeAttribute("aria-busy");
    });
  };

  Thread.prototype.onListClick = function (event) {
    var button = event.target.closest("[data-action]");
    if (!button || !this.list.contains(button)) return;
    var entry = this.posts.get(Number(button.closest(".tc-item").dataset.postId));
    if (button.dataset.action === "vote") {
      var value = Number(button.dataset.value);
      return this.vote(entry, entry.mine === value ? 0 : value); // pressing a pressed button takes the vote back
    }
    if (entry.replyForm) return this.closeReply(entry);
    entry.replyForm = this.buildForm(entry);
    entry.article.querySelector(".tc-body").appendChild(entry.replyForm);
    entry.replyButton.setAttribute("aria-expanded", "true");
    entry.replyForm.querySelector(this.author ? "textarea" : "input").focus();
  };

  // -- votes ------------------------------------------------------------------------------------

  /** Vote as the name in the comment form (or the name last posted with): show the new score at
   * once, then the server's. One request per post at a time; the last click wins. */
  Thread.prototype.vote = function (entry, value) {
    var name = this.form.elements.author_name, error = this.form.querySelector(".tc-error");
    var voter = name.value.trim() || this.author;
    if (!voter) {
      error.textContent = "Please enter your name to vote.";
      return name.focus();
    }
    entry.optimistic = (entry.optimistic === null ? entry.score : entry.optimistic) - entry.mine + value;
    entry.mine = value;
    showScore(entry);
    if (!entry.sending) this.sendVote(entry, voter);
  };

  Thread.prototype.sendVote = function (entry, voter) {
    var self = this, value = entry.mine;
    entry.sending = true;
    this.api.vote(entry.post.id, { value: value, voter: voter }).then(function (tally) {
      self.author = voter;
      entry.confirmed = tally.value;
      self.applyScore(entry.post.id, tally);
    }, function (err) {
      entry.mine = entry.confirmed;
      self.say(err.status === 0 ? "Could not reach the server. Your vote was not saved." : err.message);
    }).then(function () {
      entry.sending = false;
      if (entry.mine !== entry.confirmed) return self.sendVote(entry, voter); // clicked again meanwhile
      entry.optimistic = null;
      showScore(entry);
    });
  };

  /** Close a reply form; focus the new reply if there is one, else the Reply button. */
  Thread.prototype.closeReply = function (entry, reply) {
    if (!entry.replyForm) return;
    entry.replyForm.remove();
    entry.replyForm = null;
    entry.replyButton.setAttribute("aria-expanded", "false");
    if (reply) reply.article.focus();
    else entry.replyButton.focus();
  };

  Thread.prototype.destroy = function () {
    this.destroyed = true;
    if (this.live) this.live.stop();
    if (this.observer) this.observer.disconnect();
    clearInterval(this.clock);
    clearTimeout(this.retryTimer);
    clearTimeout(this.announceTimer);
    this.root.replaceChildren();
    this.root.classList.remove("tc");
    mounted.delete(this.root);
  };

  // ---------------------------------------------------------------------------------------------
  // Public API

  /** Mount a thread on `element`. `config`: an object or a Disqus-style function. */
  function mount(element, config) {
    var previous = mounted.get(element);
    if (previous) previous.destroy();
    injectStyles();
    var thread = new Thread(element, readConfig(element, config));
    mounted.set(element, thread);
    thread.build();
    thread.start(0);
    return { destroy: thread.destroy.bind(thread), element: element };
  }

  /** Like DISQUS.reset: mount #threadcast_thread again, for single-page apps. */
  function reset(options) {
    var element = document.getElementById("threadcast_thread");
    if (element) mount(element, (options && options.config) || window.threadcast_config);
  }

  function autoMount() {
    var main = document.getElementById("threadcast_thread");
    if (main && !mounted.has(main)) mount(main, window.threadcast_config);
    document.querySelectorAll("[data-threadcast-thread]").forEach(function (element) {
      if (!mounted.has(element)) mount(element);
    });
  }

  existing.version = VERSION;
  existing.mount = mount;
  existing.reset = reset;
  window.threadcast = existing;

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", autoMount);
  else autoMount();
})(window, document);
