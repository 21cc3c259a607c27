// ployweb dashboard: small enhancements; every page reads fine without this file.
// - adds the browser's local time beside each UTC <time>
// - ticks the durations of what is still running
// - copy buttons
// - keeps <details> open or closed as the user left them when htmx swaps a region
// - opens the traceback of an attempt reached from the timeline
// - asks before sending an event, naming its type; keeps that form as typed across refreshes
// - keeps what the user loaded on demand (more steps, attempts, values) across live refreshes
(function () {
  "use strict";

  const localFormat = new Intl.DateTimeFormat(undefined, {
    year: "numeric", month: "2-digit", day: "2-digit",
    hour: "2-digit", minute: "2-digit", second: "2-digit", timeZoneName: "short",
  });

  function addLocalTimes(root) {
    root.querySelectorAll("time.utc[datetime]").forEach(function (time) {
      if (time.nextElementSibling && time.nextElementSibling.classList.contains("local-time")) return;
      const date = new Date(time.getAttribute("datetime"));
      if (isNaN(date)) return;
      const local = document.createElement("span");
      local.className = "local-time";
      local.textContent = localFormat.format(date) + " (local)";
      time.after(local);
    });
  }

  function formatDuration(ms) {
    ms = Math.max(ms, 0);
    if (ms < 1000) return Math.round(ms) + " ms";
    const seconds = ms / 1000;
    if (seconds < 60) return seconds.toFixed(2) + " s";
    let rest = Math.floor(seconds);
    const minutes = Math.floor(rest / 60);
    rest = rest % 60;
    if (minutes < 60) return minutes + " m " + String(rest).padStart(2, "0") + " s";
    const hours = Math.floor(minutes / 60);
    if (hours < 48) return hours + " h " + String(minutes % 60).padStart(2, "0") + " m";
    return Math.floor(hours / 24) + " d " + String(hours % 24).padStart(2, "0") + " h";
  }

  function tick() {
    const now = Date.now();
    document.querySelectorAll(".duration.live[data-since]").forEach(function (element) {
      const since = Date.parse(element.dataset.since);
      if (!isNaN(since)) element.textContent = formatDuration(now - since);
    });
  }

  function enableCopyButtons(root) {
    root.querySelectorAll("button.copy[data-copy]").forEach(function (button) {
      button.hidden = false;
    });
  }

  async function copy(button) {
    const source = document.querySelector(button.dataset.copy);
    if (!source) return;
    const text = source.textContent;
    try {
      await navigator.clipboard.writeText(text);
    } catch (error) {
      const range = document.createRange();
      range.selectNodeContents(source);
      const selection = window.getSelection();
      selection.removeAllRanges();
      selection.addRange(range);
      document.execCommand("copy");
    }
    const label = button.textContent;
    button.textContent = "Copied";
    button.classList.add("copied");
    setTimeout(function () {
      button.textContent = label;
      button.classList.remove("copied");
    }, 1200);
  }

  // <details> the user opened or closed, by id; a swap must not undo their choice.
  const detailsState = new Map();

  function restoreDetails(root) {
    root.querySelectorAll("details[id]").forEach(function (details) {
      if (detailsState.has(details.id)) details.open = detailsState.get(details.id);
    });
  }

  function enhance(root) {
    addLocalTimes(root);
    enableCopyButtons(root);
    restoreDetails(root);
  }

  document.addEventListener("click", function (event) {
    const button = event.target.closest("button.copy[data-copy]");
    if (button) copy(button);
  });
  document.addEventListener("toggle", function (event) {
    if (event.target.id && event.isTrusted) detailsState.set(event.target.id, event.target.open);
  }, true);
  // Filters left empty stay out of the URL: "?workflow=x", not "?workflow=x&status=&q=".
  document.addEventListener("htmx:configRequest", function (event) {
    if (!event.detail.elt.hasAttribute("data-drop-empty")) return;
    const parameters = event.detail.parameters;
    Object.keys(parameters).forEach(function (key) {
      if (parameters[key] === "") delete parameters[key];
    });
  });
  // The question names what the user typed, which a fixed hx-confirm cannot; an empty type
  // goes through unasked, for the server's message.
  document.addEventListener("htmx:confirm", function (event) {
    const form = event.detail.elt;
    if (!form.hasAttribute || !form.hasAttribute("data-confirm-event")) return;
    const field = form.elements.namedItem("type");
    const type = field ? field.value.trim() : "";
    if (!type) return;
    event.preventDefault();
    if (window.confirm("Send the event \u201c" + type + "\u201d to this execution?")) {
      event.detail.issueRequest(true);
    }
  });
  // Refreshes renew the "Send event" form (its suggested type) until the user types in it;
  // from then on they keep it as it is.
  ["focusin", "input"].forEach(function (type) {
    document.addEventListener(type, function (event) {
      const section = event.target.closest && event.target.closest("#send-event");
      if (section) section.dataset.touched = "true";
    });
  });
  document.addEventListener("htmx:configRequest", function (event) {
    const section = document.getElementById("send-event");
    if (section && section.dataset.touched) event.detail.headers["X-Keep-Event-Form"] = "true";
  });
  // On-demand loads (more steps, every attempt of a step, a whole value) carry data-load, the
  // id of what they bring. While one is in flight the live refresh waits (its swap would
  // drop the load's target); once loaded, a refresh keeps it in place (hx-preserve), then
  // reads it again: the loaded steps at once (up to LIVE_STEPS_MAX), keeping what was loaded
  // inside them, then each step's attempts shown whole (a whole value shown is one that can
  // no longer change: it stays as it is).
  const LIVE_STEPS_MAX = 500; // dashboard/execution_reads.py
  const loads = new Map(); // id: the URL that loaded it (the first page, for the steps)
  let loading = 0; // loads and their live reloads in flight: the live refresh waits for them
  let userLoads = 0; // loads the user started so far, and those still in flight
  let userInFlight = 0;
  let reloadWanted = false; // a refresh swapped in: read the loads again once none is in flight
  function isLoad(elt) { return Boolean(elt && elt.hasAttribute && elt.hasAttribute("data-load")); }
  // A request of the user's answered with the live region (Cancel) wins over a refresh: none
  // starts while it is in flight, and one that started before it is not swapped in after it.
  let liveActions = 0;
  let actingOnLive = 0;
  document.addEventListener("htmx:beforeRequest", function (event) {
    const elt = event.detail.elt;
    const xhr = event.detail.xhr;
    if (elt.id === "live") {
      if (loading || actingOnLive) event.preventDefault();
      else xhr.ployLiveActions = liveActions;
      return;
    }
    if (event.detail.target && event.detail.target.id === "live") {
      liveActions += 1;
      actingOnLive += 1;
      xhr.addEventListener("loadend", function () { actingOnLive = Math.max(actingOnLive - 1, 0); });
      return;
    }
    if (!isLoad(elt)) return;
    // The link itself is swapped away with its target, so its own events reach no one: the
    // request's end is read from the request.
    const id = elt.getAttribute("data-load");
    const url = elt.getAttribute("hx-get");
    loading += 1;
    userLoads += 1;
    userInFlight += 1;
    event.detail.xhr.addEventListener("loadend", function () {
      loading = Math.max(loading - 1, 0);
      userInFlight = Math.max(userInFlight - 1, 0);
      if (event.detail.xhr.status === 200 && !loads.has(id)) loads.set(id, url);
      if (reloadWanted && !userInFlight) setTimeout(reloadLoads, 0);
    });
  });
  function keepLoads(detail, except) {
    let text = detail.serverResponse;
    if (typeof text !== "string") return;
    loads.forEach(function (url, id) {
      if (id !== except) text = text.replace('id="' + id + '"', 'id="' + id + '" hx-preserve="true"');
    });
    detail.serverResponse = text;
  }
  document.addEventListener("htmx:beforeSwap", function (event) {
    const detail = event.detail;
    const headers = detail.requestConfig && detail.requestConfig.headers;
    const asOf = headers && headers["X-Ploy-Reload"];
    if (asOf !== undefined) {
      // A reload that a load of the user's overtook would undo it: read everything again.
      if (Number(asOf) !== userLoads) {
        detail.shouldSwap = false;
        reloadWanted = true;
        if (!userInFlight) setTimeout(reloadLoads, 0);
      } else if (detail.target && detail.target.id === "steps-extra") {
        keepLoads(detail, "steps-extra");
      }
      return;
    }
    if (!detail.target || detail.target.id !== "live") return;
    const stale = detail.xhr && detail.xhr.ployLiveActions !== undefined && detail.xhr.ployLiveActions !== liveActions;
    if (loading || stale) { detail.shouldSwap = false; return; }
    if (!loads.size || !detail.shouldSwap) return;
    keepLoads(detail, null);
    reloadWanted = true;
  });
  document.addEventListener("htmx:afterSettle", function () {
    if (reloadWanted && !userInFlight) reloadLoads();
  });
  function fetchAgain(id, url, swap) {
    loading += 1;
    const headers = { "X-Ploy-Reload": String(userLoads) };
    return htmx.ajax("GET", url, { target: "#" + id, swap: swap, headers: headers })
      .catch(function () {})
      .then(function () { loading = Math.max(loading - 1, 0); });
  }
  function reloadLoads() {
    if (!reloadWanted || userInFlight) return;
    reloadWanted = false;
    const extra = document.getElementById("steps-extra");
    const first = loads.get("steps-extra");
    const cards = extra ? extra.querySelectorAll(":scope > article.step").length : 0;
    const steps = Boolean(first && cards && cards <= LIVE_STEPS_MAX);
    function others() {
      if (reloadWanted) return; // overtaken: the next reload does it all
      loads.forEach(function (url, id) {
        if (id.endsWith("-attempts") && document.getElementById(id)) fetchAgain(id, url, "outerHTML");
      });
    }
    if (!steps) { others(); return; }
    const next = extra.querySelector("#steps-more a[hx-get]");
    const last = next ? new URL(next.getAttribute("hx-get"), location.href).searchParams.get("steps_after") : "999999999";
    const url = first + (first.indexOf("?") < 0 ? "?" : "&") + "through=" + last;
    fetchAgain("steps-extra", url, "innerHTML").then(others);
  }
  function openTarget() {
    const id = decodeURIComponent(location.hash.slice(1));
    const target = id && document.getElementById(id);
    const details = target && target.querySelector("details");
    if (details) details.open = true;
  }
  window.addEventListener("hashchange", openTarget);
  document.addEventListener("htmx:load", function (event) { enhance(event.detail.elt); });
  document.addEventListener("DOMContentLoaded", function () {
    enhance(document);
    openTarget();
    tick();
    setInterval(tick, 250);
  });
})();
