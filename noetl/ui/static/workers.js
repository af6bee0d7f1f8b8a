// The worker registry, live.
import { api, badge, el, poll, timeEl } from "./noetl.js";

function ago(iso) {
  const value = Math.max(0, (Date.now() - Date.parse(iso)) / 1000);
  return value < 90 ? `${Math.round(value)} s ago` : `${Math.round(value / 60)} min ago`;
}

async function refresh() {
  const page = await api("/api/workers");
  document.getElementById("empty").hidden = page.items.length > 0;
  document.querySelector("#workers tbody").replaceChildren(...page.items.map((w) => el("tr", { dataset: { worker: w.worker_id } },
    el("th", { scope: "row", class: "mono" }, w.worker_id),
    el("td", {}, w.hostname || ""),
    el("td", {}, badge(w.status)),
    el("td", { class: "num" }, `${w.running} / ${w.concurrency ?? "?"}`),
    el("td", {}, timeEl(w.started_at)),
    el("td", {}, el("time", { datetime: w.heartbeat_at, title: w.heartbeat_at }, ago(w.heartbeat_at))))));
  return true;
}

poll(refresh, 3000);
