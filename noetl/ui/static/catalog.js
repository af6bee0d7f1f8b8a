// The catalog: registered playbooks, their versions and YAML, and a form to execute one.
import { api, el, problem, timeEl } from "./noetl.js";
import { drawGraph } from "./graph.js";

const params = new URLSearchParams(location.search);
const list = document.querySelector("#playbooks tbody");
const panel = document.getElementById("playbook");
const versions = document.getElementById("version");
const payload = document.getElementById("payload");
const payloadError = document.getElementById("payload-error");
let current = null;

function checkPayload() {
  let message = "";
  try {
    const value = JSON.parse(payload.value || "{}");
    if (value === null || typeof value !== "object" || Array.isArray(value)) message = "The payload must be a JSON object, like {\"key\": \"value\"}.";
  } catch (error) {
    message = `Not valid JSON: ${error.message}`;
  }
  payloadError.textContent = message;
  payload.setAttribute("aria-invalid", message ? "true" : "false");
  document.getElementById("execute").disabled = Boolean(message);
  return !message;
}

async function show(path, version) {
  const found = await api(`/api/catalog/versions?path=${encodeURIComponent(path)}`);
  const entry = found.items.find((v) => String(v.version) === String(version)) || found.items[0];
  current = entry;
  versions.replaceChildren(...found.items.map((v) => el("option", { value: v.version, selected: v.version === entry.version },
    `v${v.version} · ${new Date(v.created_at).toLocaleString()}`)));
  const full = await api(`/api/catalog/${entry.catalog_id}`);
  document.getElementById("playbook-title").textContent = `${entry.path} v${entry.version}`;
  document.getElementById("yaml").textContent = full.content;
  document.getElementById("playbook-executions").href = `/?path=${encodeURIComponent(entry.path)}`;
  const figure = document.getElementById("graph");
  figure.querySelector("svg")?.remove();
  drawGraph(figure, await api(`/api/catalog/${entry.catalog_id}/graph`), () => {});
  panel.hidden = false;
  for (const row of list.querySelectorAll("tr")) {
    const here = row.dataset.path === entry.path;
    row.classList.toggle("selected", here);
    const link = row.querySelector("a");
    if (here) link.setAttribute("aria-current", "true"); else link.removeAttribute("aria-current");
  }
}

function choose(path, version) {
  const search = new URLSearchParams({ path });
  if (version) search.set("version", version);
  history.pushState(null, "", `/ui/catalog?${search}`);
  show(path, version).catch((error) => problem(error.message));
}

async function load() {
  const page = await api("/api/catalog");
  document.getElementById("empty").hidden = page.items.length > 0;
  list.replaceChildren(...page.items.map((entry) => el("tr", { dataset: { path: entry.path } },
    el("th", { scope: "row" }, el("a", {
      href: `/ui/catalog?path=${encodeURIComponent(entry.path)}`,
      onclick: (event) => { event.preventDefault(); choose(entry.path); },
    }, entry.path)),
    el("td", {}, entry.name),
    el("td", { class: "num" }, `v${entry.version}`),
    el("td", {}, timeEl(entry.created_at)))));
  if (params.get("path")) await show(params.get("path"), params.get("version"));
}

versions.addEventListener("change", () => choose(current.path, versions.value));
payload.addEventListener("input", checkPayload);
document.getElementById("execute-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  if (!checkPayload() || !current) return;
  try {
    const started = await api("/api/execute", {
      body: { path: current.path, version: current.version, payload: JSON.parse(payload.value || "{}") },
    });
    location.assign(`/ui/executions/${started.execution_id}`);
  } catch (error) {
    payloadError.textContent = `The server refused it: ${error.message}`;
  }
});
window.addEventListener("popstate", () => location.reload());

load().catch((error) => problem(`Cannot load the catalog: ${error.message}`));
