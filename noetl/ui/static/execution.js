// One execution: header and actions, step graph with live statuses, progress, timeline,
// child executions and the events table. Polls /live (one request a second) while running.
import { ApiError, api, badge, clockEl, el, has, poll, pretty, problem, seconds, when } from "./noetl.js";
import { drawGraph, paintGraph } from "./graph.js";
import { drawTimeline } from "./timeline.js";

const root = document.getElementById("execution");
const id = root.dataset.executionId;
const base = `/api/executions/${encodeURIComponent(id)}`;
const EVENTS_PAGE = 200;
const EVENTS_LIVE_CAP = 2000;

let execution = null;
let graph = null;
let cursor = "0";
let eventsAtEnd = false;
let eventsShown = 0;
let selected = null;
let ticks = 0;

// -- header and actions ---------------------------------------------------------------------

function renderHeader(x) {
  document.getElementById("x-status").replaceChildren(badge(x.status));
  const path = document.getElementById("x-path");
  path.textContent = `${x.path} v${x.version}`;
  path.href = `/ui/catalog?path=${encodeURIComponent(x.path)}&version=${x.version}`;
  const times = [`started ${when(x.created_at)}`];
  if (x.ended_at) times.push(`ended after ${seconds(x.duration_seconds)}`);
  document.getElementById("x-times").textContent = `· ${times.join(" · ")}`;
  const links = [];
  if (x.parent_execution_id) {
    links.push("Parent: ", el("a", { href: `/ui/executions/${x.parent_execution_id}`, class: "mono" }, x.parent_execution_id), " ");
  }
  if (x.rerun_of) {
    links.push("Re-run of: ", el("a", { href: `/ui/executions/${x.rerun_of}`, class: "mono" }, x.rerun_of));
  }
  document.getElementById("x-links").replaceChildren(...links);
  const running = x.status === "RUNNING";
  document.getElementById("cancel").hidden = !running;
  document.getElementById("rerun-failed").hidden = !has("rerun") || x.status !== "FAILED";
  document.getElementById("rerun-step-group").hidden = !has("rerun") || running;
  const outcome = document.getElementById("outcome");
  outcome.hidden = running;
  if (!running) {
    const error = document.getElementById("x-error");
    error.replaceChildren(...(x.error ? [el("h3", {}, "Error"), el("pre", { class: "error-text" }, x.error)] : []));
    document.getElementById("x-result").textContent = pretty(x.result);
    document.getElementById("x-result-box").open = x.status === "COMPLETED";
  }
}

function say(message) {
  document.getElementById("action-message").textContent = message;
}

async function act(label, request) {
  try {
    return await request();
  } catch (error) {
    if (error instanceof ApiError && error.status === 404 && error.body && error.body.detail === "Not Found") {
      say(`${label}: this server does not offer it.`);
    } else {
      say(`${label} failed: ${error.message}`);
    }
    return null;
  }
}

document.getElementById("cancel").addEventListener("click", async () => {
  if (!window.confirm(`Cancel execution ${id}? Pending commands are cancelled; running ones stop at their next lease renewal.`)) return;
  const answer = await act("Cancel", () => api(`${base}/cancel`, { body: { reason: "cancelled from the UI" } }));
  if (answer) { say(`Execution ${answer.status.toLowerCase()}.`); tick(); }
});

async function rerun(body, label) {
  const answer = await act(label, () => api(`${base}/rerun`, { body }));
  if (answer && answer.execution_id) location.assign(`/ui/executions/${answer.execution_id}`);
}
document.getElementById("rerun-failed").addEventListener("click", () => rerun({ from_failed: true }, "Re-run"));
document.getElementById("rerun-step-button").addEventListener("click", () => {
  const step = document.getElementById("rerun-step").value;
  if (step) rerun({ from_step: step }, "Re-run");
});

// -- steps: graph, table, details ------------------------------------------------------------

function stepStates() {
  const byName = new Map((execution.steps || []).map((s) => [s.step, s]));
  const names = graph ? graph.steps.map((s) => s.step) : [...byName.keys()];
  return names.map((name) => byName.get(name) || { step: name, status: "waiting", runs: 0 });
}

function loopText(loop) {
  if (!loop) return "";
  return `${loop.succeeded} / ${loop.failed} / ${loop.in_flight} of ${loop.count}`;
}

let stepsShown = "";

function renderSteps() {
  const states = stepStates();
  const fingerprint = JSON.stringify(states);
  if (fingerprint === stepsShown) return;
  const before = new Map(JSON.parse(stepsShown || "[]").map((s) => [s.step, s.status]));
  stepsShown = fingerprint;
  if (graph) paintGraph(document.getElementById("graph"), states, selected);
  const focused = document.activeElement && document.activeElement.closest("#steps tr");
  const focusedStep = focused && focused.dataset.step;
  const body = document.querySelector("#steps tbody");
  body.replaceChildren(...states.map((s) => el("tr", { dataset: { step: s.step, status: s.status } },
    el("th", { scope: "row" }, el("button", { type: "button", class: "link", onclick: () => show(s.step) }, s.step)),
    el("td", {}, badge(s.status)),
    el("td", { class: "num" }, String(s.runs)),
    el("td", {}, s.loop ? el("span", {}, progressBar(s.loop), " ", loopText(s.loop)) : ""))));
  if (focusedStep) {
    const again = body.querySelector(`tr[data-step="${CSS.escape(focusedStep)}"] button`);
    if (again) again.focus();
  }
  const current = selected && states.find((s) => s.step === selected);
  if (current && before.size && before.get(selected) !== current.status) show(selected);  // live details
  const choose = document.getElementById("rerun-step");
  if (choose.options.length !== states.length) {
    choose.replaceChildren(...states.map((s) => el("option", { value: s.step }, s.step)));
  }
}

function progressBar(loop) {
  const done = loop.succeeded + loop.failed;
  return el("progress", { max: String(loop.count || 1), value: String(done), "aria-label": `${done} of ${loop.count} items done` });
}

let selecting = 0;

// From clicks and live changes: a failure shows on the page (a fetch cut short by leaving the
// page is not one).
function show(step) {
  select(step).catch((error) => {
    if (error instanceof ApiError) problem(`Cannot load step ${step}: ${error.message}`);
  });
}

// Shows a step's details; of overlapping calls (a click, the URL's #step-, a live change)
// only the latest one fills the panel.
async function select(step) {
  const ticket = ++selecting;
  selected = step;
  if (graph) paintGraph(document.getElementById("graph"), stepStates(), selected);
  const panel = document.getElementById("step-body");
  const state = stepStates().find((s) => s.step === step) || { status: "waiting", runs: 0 };
  const head = [el("h3", {}, step), el("p", {}, badge(state.status), ` · runs ${state.runs}`,
    state.loop ? ` · loop ${loopText(state.loop)} (done / failed / in flight of N)` : "")];
  panel.replaceChildren(...head);
  const [detail, logs] = await Promise.all([
    api(`${base}/steps/${encodeURIComponent(step)}`),
    stepLogs(step).catch((error) => `(cannot read the output: ${error.message})`),
  ]);
  if (ticket !== selecting) return;
  const parts = [];
  if (detail.error) {
    parts.push(el("h4", {}, `Error (attempt ${detail.error_attempt ?? "?"})`), el("pre", { class: "error-text" }, detail.error));
  }
  if (detail.problems && detail.problems.length) {
    // a `when` that failed to render is false, a `set` value that failed is skipped: why an arc did not fire
    parts.push(el("h4", {}, "Template problems"), el("ul", { class: "problems" }, ...detail.problems.map((p) => el("li", {}, el("code", {}, p)))));
  }
  if (detail.result !== null && detail.result !== undefined) {
    parts.push(el("details", { open: true }, el("summary", {}, "Result"), el("pre", { class: "json" }, pretty(detail.result))));
  }
  const mine = children.filter((c) => stepOf(c) === step);
  if (mine.length) parts.push(el("h4", {}, "Child executions"), el("ul", {}, ...mine.map(childLink)));
  if (logs) parts.push(el("details", { open: true }, el("summary", {}, "Output (stdout, stderr)"), el("pre", { class: "log" }, logs)));
  if (!parts.length) parts.push(el("p", { class: "muted" }, "No result, error or output recorded yet."));
  panel.replaceChildren(...head, ...parts);
}

// What the step's commands printed (GET /api/executions/{id}/logs?step=), the last 200
// entries: one block per command, attempt and stream; python tracebacks arrive on stderr.
async function stepLogs(step) {
  if (!has("logs")) return null;
  const body = await api(`${base}/logs?step=${encodeURIComponent(step)}&limit=200`);
  const items = (body && body.items) || [];
  if (!items.length) return null;
  const several = new Set(items.map((item) => item.command_id)).size > 1;
  return items.map((item) => {
    const who = several ? `${item.command_id} · ` : "";
    const attempt = item.attempt ? `attempt ${item.attempt} · ` : "";
    return `── ${who}${attempt}${item.stream} ──\n${String(item.text ?? "").replace(/\n$/, "")}`;
  }).join("\n");
}

// -- events ----------------------------------------------------------------------------------

function eventRow(e) {
  const details = [];
  for (const key of ["payload", "result"]) {
    if (e[key] !== null && e[key] !== undefined) {
      details.push(el("h4", {}, key), el("pre", { class: "json" }, pretty(e[key])));
    }
  }
  if (e.error) details.push(el("h4", {}, "error"), el("pre", { class: "error-text" }, e.error));
  const summary = [e.payload != null && "payload", e.result != null && "result", e.error && "error"].filter(Boolean).join(", ");
  return el("tr", { id: `event-${e.event_id}`, dataset: { type: e.event_type }, class: e.error ? "has-error" : null },
    el("td", { class: "mono" }, e.event_id),
    el("td", { class: "nowrap" }, clockEl(e.created_at)),
    el("td", {}, el("code", {}, e.event_type)),
    el("td", {}, e.step || ""),
    el("td", { class: "mono" }, e.command_id || ""),
    el("td", { class: "num" }, e.attempt ?? ""),
    el("td", { class: "worker" }, e.worker_id || ""),
    el("td", {}, details.length ? el("details", {}, el("summary", {}, summary), ...details) : ""));
}

function addEvents(items, limit) {
  document.querySelector("#events tbody").append(...items.map(eventRow));
  eventsShown += items.length;
  if (items.length) cursor = items[items.length - 1].event_id;
  eventsAtEnd = items.length < limit;
  document.getElementById("more-events").hidden = eventsAtEnd;
  document.getElementById("events-count").textContent = `${eventsShown} events shown`;
}

document.getElementById("more-events").addEventListener("click", async () => {
  const page = await api(`${base}/events?after=${cursor}&limit=${EVENTS_PAGE * 5}`);
  addEvents(page.items, EVENTS_PAGE * 5);
});

// -- children --------------------------------------------------------------------------------

let children = [];

function childLink(c) {
  return el("li", {}, el("a", { href: `/ui/executions/${c.execution_id}`, class: "mono" }, c.execution_id),
    " ", c.path, " ", badge(c.status));
}

// A child's parent_command_id is "<execution>:<step>" or "<execution>:<step>[<iteration>]".
function stepOf(child) {
  const command = String(child.parent_command_id || "");
  return command.slice(command.indexOf(":") + 1).replace(/\[\d+\]$/, "");
}

async function renderChildren() {
  const page = await api(`/api/executions?parent=${encodeURIComponent(id)}&brief=true&limit=100`);
  children = page.items;
  const section = document.getElementById("children-section");
  section.hidden = page.items.length === 0;
  document.getElementById("children").replaceChildren(...page.items.map(childLink));
}

async function renderTimeline() {
  drawTimeline(document.getElementById("timeline"), await api(`${base}/timeline`));
}

// -- the loop ---------------------------------------------------------------------------------

// The events table loads when it is scrolled into view, then follows the log while the
// execution runs: a page looking at the graph costs the server one small request a second.
let eventsWanted = false;
function loadEventsWhenSeen() {
  new IntersectionObserver((entries, observer) => {
    if (!entries.some((entry) => entry.isIntersecting)) return;
    observer.disconnect();
    eventsWanted = true;
    api(`${base}/live?after=0&limit=${EVENTS_PAGE}`).then((page) => addEvents(page.events, EVENTS_PAGE))
      .catch((error) => problem(`Cannot load the events: ${error.message}`));
  }).observe(document.getElementById("events"));
}

async function tick() {
  const appending = eventsWanted && eventsAtEnd && eventsShown < EVENTS_LIVE_CAP;
  const limit = appending ? EVENTS_PAGE : 0;
  const live = await api(`${base}/live?after=${cursor}&limit=${limit}`);
  const wasRunning = execution && execution.status === "RUNNING";
  execution = live.execution;
  renderHeader(execution);
  renderSteps();
  if (appending) addEvents(live.events, limit);
  else if (eventsWanted) document.getElementById("more-events").hidden = false;
  ticks += 1;
  const running = execution.status === "RUNNING";
  if (ticks % 5 === 0 || (wasRunning && !running)) {
    await Promise.all([renderTimeline(), renderChildren()]);
  }
  return running;
}

async function start() {
  const first = await api(`${base}/live?after=0&limit=0`);
  execution = first.execution;
  document.title = `${execution.path} · execution ${id} · NoETL`;
  try {
    graph = await api(`/api/catalog/${execution.catalog_id}/graph`);
    drawGraph(document.getElementById("graph"), graph, show);
  } catch (error) {
    document.getElementById("graph").append(el("p", { class: "error" }, `Cannot draw the graph: ${error.message}`));
  }
  renderHeader(execution);
  renderSteps();
  await Promise.all([renderTimeline(), renderChildren()]);
  loadEventsWhenSeen();  // after the page has its height
  const wanted = decodeURIComponent(location.hash.replace(/^#step-/, ""));
  if (location.hash.startsWith("#step-") && wanted) show(wanted);
  if (execution.status === "RUNNING") poll(tick, 1000);
}

start().catch((error) => problem(error.status === 404 ? `Execution ${id} does not exist.` : `Cannot load execution ${id}: ${error.message}`));
