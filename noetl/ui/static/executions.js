// The executions list: newest first, status filter, path search, keyset pages, live.
import { api, badge, el, poll, seconds, timeEl } from "./noetl.js";

const PAGE = 50;
const params = new URLSearchParams(location.search);
const form = document.getElementById("filters");
const statusFilter = document.getElementById("status-filter");
const pathFilter = document.getElementById("path-filter");
const body = document.querySelector("#executions tbody");
let shown = "";
let items = [];

statusFilter.value = params.get("status") || "";
pathFilter.value = params.get("path") || "";

function query() {
  const q = new URLSearchParams({ limit: String(PAGE), brief: "true" });
  for (const key of ["status", "path", "before", "after"]) {
    if (params.get(key)) q.set(key, params.get(key));
  }
  return q;
}

function go(changes) {
  for (const [key, value] of Object.entries(changes)) {
    if (value) params.set(key, value); else params.delete(key);
  }
  const search = params.toString();
  history.pushState(null, "", search ? `/?${search}` : "/");
  shown = "";
  refresh();
}

function row(x) {
  const href = `/ui/executions/${encodeURIComponent(x.execution_id)}`;
  return el("tr", { dataset: { id: x.execution_id, status: x.status.toLowerCase() } },
    el("td", { class: "mono" }, el("a", { href }, x.execution_id)),
    el("td", {}, x.path, el("span", { class: "muted" }, ` v${x.version}`)),
    el("td", {}, badge(x.status)),
    el("td", {}, timeEl(x.created_at)),
    el("td", { class: "num" }, x.duration_seconds === null ? "…" : seconds(x.duration_seconds)),
    el("td", { class: "mono" }, x.parent_execution_id
      ? el("a", { href: `/ui/executions/${x.parent_execution_id}` }, x.parent_execution_id) : ""));
}

async function refresh() {
  const page = await api(`/api/executions?${query()}`);
  items = page.items;
  if (params.get("after") && items.length < PAGE) {  // back at the newest page: live again
    params.delete("after");
    history.replaceState(null, "", params.toString() ? `/?${params}` : "/");
    return refresh();
  }
  const fingerprint = JSON.stringify(items);
  if (fingerprint !== shown) {
    shown = fingerprint;
    const focused = document.activeElement && document.activeElement.closest("tr");
    const focusedId = focused && focused.dataset.id;
    body.replaceChildren(...items.map(row));
    if (focusedId) {
      const again = body.querySelector(`tr[data-id="${CSS.escape(focusedId)}"] a`);
      if (again) again.focus();
    }
  }
  document.getElementById("empty").hidden = items.length > 0;
  const first = !params.get("before") && !params.get("after");
  document.getElementById("newest").disabled = first;
  document.getElementById("newer").disabled = first;
  document.getElementById("older").disabled = items.length < PAGE;
  return true;
}

form.addEventListener("submit", (event) => {
  event.preventDefault();
  go({ status: statusFilter.value, path: pathFilter.value.trim(), before: "", after: "" });
});
statusFilter.addEventListener("change", () => form.requestSubmit());
document.getElementById("older").addEventListener("click", () => {
  if (items.length) go({ before: items[items.length - 1].execution_id, after: "" });
});
document.getElementById("newer").addEventListener("click", () => {
  if (items.length) go({ after: items[0].execution_id, before: "" });
  else go({ before: "", after: "" });
});
document.getElementById("newest").addEventListener("click", () => go({ before: "", after: "" }));
window.addEventListener("popstate", () => {
  for (const key of [...params.keys()]) params.delete(key);
  new URLSearchParams(location.search).forEach((value, key) => params.set(key, value));
  statusFilter.value = params.get("status") || "";
  pathFilter.value = params.get("path") || "";
  shown = "";
  refresh();
});

poll(refresh, 2000);
