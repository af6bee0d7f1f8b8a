// Schedules (GET /api/schedules), live, with pause and resume, when the server has them.
import { api, badge, el, has, poll, problem, timeEl } from "./noetl.js";

function every(seconds) {
  if (seconds % 86400 === 0) return `every ${seconds / 86400} d`;
  if (seconds % 3600 === 0) return `every ${seconds / 3600} h`;
  if (seconds % 60 === 0) return `every ${seconds / 60} min`;
  return `every ${seconds} s`;
}

function when(s) {
  if (s.cron) return `${s.cron}${s.timezone ? ` (${s.timezone})` : ""}`;
  return s.every_seconds ? every(s.every_seconds) : "";
}

async function toggle(s) {
  try {
    await api(`/api/schedules/${encodeURIComponent(s.schedule_id)}/${s.enabled ? "pause" : "resume"}`, { body: {} });
    await refresh();
  } catch (error) {
    problem(`Cannot ${s.enabled ? "pause" : "resume"} schedule ${s.schedule_id}: ${error.message}`);
  }
}

async function refresh() {
  const page = await api("/api/schedules");
  const items = page.items || [];
  document.getElementById("empty").hidden = items.length > 0;
  document.querySelector("#schedules tbody").replaceChildren(...items.map((s) => el("tr", { dataset: { schedule: s.schedule_id } },
    el("th", { scope: "row", class: "mono" }, s.schedule_id),
    el("td", {}, el("a", { href: `/ui/catalog?path=${encodeURIComponent(s.path)}` }, s.path),
      s.version ? el("span", { class: "muted" }, ` v${s.version}`) : el("span", { class: "muted" }, " latest")),
    el("td", { class: "mono" }, when(s)),
    el("td", {}, timeEl(s.next_fire_at)),
    el("td", {}, s.last_execution_id
      ? el("a", { href: `/ui/executions/${s.last_execution_id}`, class: "mono" }, s.last_execution_id) : ""),
    el("td", {}, badge(s.enabled ? "active" : "paused"), " ",
      el("button", { type: "button", onclick: () => toggle(s) }, s.enabled ? "Pause" : "Resume")))));
  return true;
}

if (has("schedules")) {
  poll(refresh, 5000);
} else {
  const empty = document.getElementById("empty");
  empty.textContent = "This server has no schedules API yet.";
  empty.hidden = false;
}
