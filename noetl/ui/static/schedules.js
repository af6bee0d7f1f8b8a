// Schedules, when the server has them (GET /api/schedules).
import { api, el, has, problem, timeEl } from "./noetl.js";

function text(value) {
  return value === null || value === undefined ? "" : String(value);
}

async function load() {
  if (!has("schedules")) {
    const empty = document.getElementById("empty");
    empty.textContent = "This server has no schedules API yet.";
    empty.hidden = false;
    return;
  }
  const page = await api("/api/schedules");
  const items = Array.isArray(page) ? page : page.items || [];
  document.getElementById("empty").hidden = items.length > 0;
  document.querySelector("#schedules tbody").replaceChildren(...items.map((s) => el("tr", {},
    el("th", { scope: "row" }, text(s.name ?? s.schedule_id)),
    el("td", {}, text(s.path ?? s.playbook)),
    el("td", { class: "mono" }, text(s.cron ?? s.every ?? s.interval ?? s.when)),
    el("td", {}, timeEl(s.next_run_at ?? s.next_at)),
    el("td", {}, s.last_execution_id
      ? el("a", { href: `/ui/executions/${s.last_execution_id}`, class: "mono" }, s.last_execution_id)
      : timeEl(s.last_run_at)),
    el("td", {}, s.enabled === false ? "no" : "yes"))));
}

load().catch((error) => problem(`Cannot load schedules: ${error.message}`));
