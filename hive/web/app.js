// The hive's web page: jobs (live), a job's output (live, resumable), cancel
// with the teardown report, the catalog with Install buttons, installed workers.
// Plain ES modules; same-origin requests only; the session is an HttpOnly cookie.

import { JobStream } from "./stream.js";
import { LogView } from "./logview.js";

const view = document.getElementById("view");
const connection = document.getElementById("connection");
let cleanup = () => {};

class Unauthorized extends Error {}

async function api(method, path, body) {
  const options = { method, headers: {}, credentials: "same-origin" };
  if (body !== undefined) {
    options.headers["Content-Type"] = "application/json";
    options.body = JSON.stringify(body);
  }
  const response = await fetch(path, options);
  if (response.status === 401) throw new Unauthorized();
  const data = await response.json().catch(() => ({}));
  if (!response.ok) throw new Error(data.message || `HTTP ${response.status}`);
  return data;
}

function el(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attributes)) {
    if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else if (value !== undefined && value !== null && value !== false) node.setAttribute(key, value);
  }
  node.append(...children.filter((c) => c !== null && c !== undefined));
  return node;
}

function stateBadge(state) {
  return el("span", { class: `state-${state}`, "data-state": state }, state);
}

function since(iso) {
  if (!iso) return "";
  const seconds = (Date.now() - Date.parse(iso)) / 1000;
  if (seconds < 60) return `${Math.max(0, Math.round(seconds))} s ago`;
  if (seconds < 3600) return `${Math.round(seconds / 60)} min ago`;
  return new Date(iso).toLocaleString();
}

export function describeTeardown(t) {
  if (!t) return "no process was started";
  const text = `${t.found} process(es) found, ${t.sigterm} sent SIGTERM, ${t.sigkill} sent SIGKILL, ` +
    `${t.left} left${t.verified === false ? " (unverified)" : ""}, ${(t.seconds * 1000).toFixed(0)} ms`;
  const usage = describeUsage(t);
  return usage ? `${text}; used ${usage}` : text;
}

// The job's CPU time, peak memory and peak task count, from its cgroups.
export function describeUsage(t) {
  const u = (t && t.usage) || {};
  const parts = [];
  if (typeof u.memory_peak === "number") parts.push(`peak memory ${(u.memory_peak / 2 ** 20).toFixed(1)} MiB`);
  if (typeof u.cpu_seconds === "number") parts.push(`CPU ${u.cpu_seconds.toFixed(2)} s`);
  if (typeof u.tasks_peak === "number") parts.push(`at most ${u.tasks_peak} tasks`);
  return parts.join(", ");
}

// ---- views ---------------------------------------------------------------

async function jobsView() {
  const body = el("tbody");
  view.replaceChildren(el("section", { class: "card" },
    el("h2", {}, "Jobs"),
    el("table", { id: "jobs" },
      el("thead", {}, el("tr", {},
        el("th", {}, "job"), el("th", {}, "worker"), el("th", {}, "state"),
        el("th", { class: "hide-narrow" }, "exit"), el("th", { class: "hide-narrow" }, "created"))),
      body)));
  const rows = new Map(); // job id -> <tr>, newest first in the table
  const row = (job) => el("tr", { "data-job": job.id },
    el("td", { class: "mono" }, el("a", { href: `#/jobs/${job.id}` }, job.id)),
    el("td", {}, job.worker),
    el("td", {}, stateBadge(job.state)),
    el("td", { class: "hide-narrow" }, job.exit_code === null ? "" : String(job.exit_code)),
    el("td", { class: "hide-narrow muted" }, since(job.created_at)));
  const empty = () => {
    if (!rows.size) body.replaceChildren(el("tr", {}, el("td", { colspan: 5, class: "muted" },
      "No jobs yet — install a worker from the catalog.")));
  };
  const events = {
    snapshot(jobs) {
      rows.clear();
      for (const job of jobs) rows.set(job.id, row(job));
      body.replaceChildren(...[...rows.values()].reverse());
      empty();
    },
    job(job) { // one job changed: only its row is touched
      const fresh = row(job);
      const old = rows.get(job.id);
      if (old) old.replaceWith(fresh);
      else if (rows.size) body.prepend(fresh);
      else body.replaceChildren(fresh);
      rows.set(job.id, fresh);
    },
    removed(ids) {
      for (const id of ids) { rows.get(id)?.remove(); rows.delete(id); }
      empty();
    },
  };
  events.snapshot((await api("GET", "/v1/jobs")).jobs);
  return watchJobs(events);
}

// Live job list (docs/api.md): a snapshot, then one message per changed job.
function watchJobs(events) {
  let closed = false;
  let socket;
  let delay = 200;
  const open = () => {
    const scheme = location.protocol === "https:" ? "wss" : "ws";
    socket = new WebSocket(`${scheme}://${location.host}/v1/events`);
    socket.onopen = () => { delay = 200; connection.textContent = "live"; };
    socket.onmessage = (message) => {
      const started = performance.now();
      const event = JSON.parse(message.data);
      if (event.type === "snapshot") events.snapshot(event.jobs);
      else if (event.type === "job") events.job(event.job);
      else if (event.type === "removed") events.removed(event.ids);
      // For tests and the benchmark: what each message cost the page (ms).
      (window.hiveEventTimes ||= []).push([event.type, performance.now() - started]);
    };
    socket.onclose = (close) => {
      if (closed) return;
      if (close.code === 4401) { route(); return; } // signed out: the login form
      if (close.code >= 4400 && close.code < 4500) {
        connection.textContent = `refused: ${close.reason}`;
        return;
      }
      connection.textContent = "reconnecting";
      setTimeout(open, delay);
      delay = Math.min(delay * 2, 3000);
    };
  };
  open();
  return () => { closed = true; socket.close(); };
}

async function jobView(jobId) {
  const job = await api("GET", `/v1/jobs/${jobId}`);
  const state = el("span", {}, stateBadge(job.state));
  const status = el("span", { class: "muted", id: "stream-status" }, "");
  const report = el("div", { class: "report", id: "report" });
  const cancel = el("button", {
    class: "danger", id: "cancel",
    onclick: async () => {
      cancel.disabled = true;
      cancel.textContent = "Cancelling…";
      try { await api("DELETE", `/v1/jobs/${jobId}`); }
      catch (error) { report.textContent = `cancel failed: ${error.message}`; }
    },
  }, "Cancel");
  const logBox = el("div", { id: "log" });
  view.replaceChildren(el("section", { class: "card" },
    el("div", { class: "row" },
      el("h2", { class: "grow" }, `${job.worker} `, el("span", { class: "mono muted" }, job.id)),
      state, cancel),
    el("div", { class: "row muted" }, status),
    logBox, report));
  const log = new LogView(logBox);
  const ended = (event) => {
    status.textContent = "ended";
    cancel.disabled = true;
    cancel.textContent = event.state === "cancelled" ? "Cancelled" : "Ended";
    log.flushPartial();
    log.schedule();
    report.textContent = `${event.state}${event.exit_code === null ? "" : `, exit code ${event.exit_code}`}` +
      `${event.error ? ` — ${event.error}` : ""}\nteardown: ${describeTeardown(event.teardown)}`;
  };
  if (job.state === "succeeded" || job.state === "failed" || job.state === "cancelled") {
    cancel.disabled = true;
  }
  const stream = new JobStream(jobId, {
    onOutput: (name, bytes) => log.output(name, bytes),
    onEvent: (event) => {
      if (event.type === "state") state.replaceChildren(stateBadge(event.state));
      else if (event.type === "message") log.note(`hive: ${event.text}`);
      else if (event.type === "end") { state.replaceChildren(stateBadge(event.state)); ended(event); }
    },
    onStatus: (text) => { status.textContent = text; connection.textContent = text; },
  });
  stream.start();
  window.hiveLog = log; // for tests and the curious: line count, etc.
  return () => stream.close();
}

async function catalogView() {
  const { workers } = await api("GET", "/v1/catalog");
  const rows = workers.map((w) => {
    const broken = w.broken ? el("span", { class: "error" }, `broken: ${w.reason || ""}`) : null;
    const missing = w.missing || [];
    const install = el("button", {
      "data-install": w.name,
      disabled: w.broken ? "disabled" : null,
      onclick: async () => {
        install.disabled = true;
        try {
          const job = await api("POST", "/v1/jobs", { operation: "worker_download", worker: w.name });
          location.hash = `#/jobs/${job.id}`;
        } catch (error) {
          install.disabled = false;
          alert(error.message);
        }
      },
    }, "Install");
    const installed = (w.installed || []).join(", ");
    return el("tr", {},
      el("td", {}, el("strong", {}, w.name), el("div", { class: "muted" }, w.description || ""), broken,
        missing.length ? el("div", { class: "error" }, `missing: ${missing.join(", ")}`) : null),
      el("td", { class: "mono" }, w.full_version || w.version || ""),
      el("td", { class: "hide-narrow mono" }, installed),
      el("td", {}, install));
  });
  view.replaceChildren(el("section", { class: "card" }, el("h2", {}, "Catalog"),
    el("table", {}, el("thead", {}, el("tr", {}, el("th", {}, "worker"), el("th", {}, "version"),
      el("th", { class: "hide-narrow" }, "installed"), el("th", {}, ""))), el("tbody", {}, ...rows))));
  return () => {};
}

async function workersView() {
  const { workers } = await api("GET", "/v1/workers");
  const rows = workers.map((w) => el("tr", {},
    el("td", {}, el("strong", {}, w.name)),
    el("td", { class: "mono" }, (w.versions || [w.version]).map((v) => (typeof v === "string" ? v : v.version)).join(", ")),
    el("td", { class: "hide-narrow muted" }, w.installed_at || ""),
    el("td", {}, el("button", {
      class: "danger",
      onclick: async () => {
        if (!confirm(`Remove ${w.name}?`)) return;
        await api("DELETE", `/v1/workers/${encodeURIComponent(w.name)}`);
        route();
      },
    }, "Remove"))));
  view.replaceChildren(el("section", { class: "card" }, el("h2", {}, "Installed workers"),
    rows.length ? el("table", {}, el("tbody", {}, ...rows)) : el("p", { class: "muted" }, "None yet.")));
  return () => {};
}

function loginView() {
  const form = document.getElementById("login").content.firstElementChild.cloneNode(true);
  const error = form.querySelector(".error");
  form.addEventListener("submit", async (submit) => {
    submit.preventDefault();
    try {
      await api("POST", "/v1/session", { token: form.token.value.trim() });
      route();
    } catch (failure) {
      error.hidden = false;
      error.textContent = failure instanceof Unauthorized ? "That token is not valid." : failure.message;
    }
  });
  view.replaceChildren(form);
  return () => {};
}

// ---- routing ---------------------------------------------------------------

async function route() {
  cleanup();
  cleanup = () => {};
  const hash = location.hash || "#/";
  const job = hash.match(/^#\/jobs\/([0-9a-f]{12})$/);
  try {
    if (job) cleanup = await jobView(job[1]);
    else if (hash === "#/catalog") cleanup = await catalogView();
    else if (hash === "#/workers") cleanup = await workersView();
    else cleanup = await jobsView();
  } catch (error) {
    if (error instanceof Unauthorized) cleanup = loginView();
    else view.replaceChildren(el("p", { class: "error" }, error.message));
  }
}

window.addEventListener("hashchange", route);
route();
