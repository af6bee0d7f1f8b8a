// Credentials: names and types only; the UI never requests their data.
import { api, el, problem, timeEl } from "./noetl.js";

async function load() {
  const page = await api("/api/credentials");
  document.getElementById("empty").hidden = page.items.length > 0;
  document.querySelector("#credentials tbody").replaceChildren(...page.items.map((c) => el("tr", {},
    el("th", { scope: "row", class: "mono" }, c.name),
    el("td", {}, c.type),
    el("td", {}, c.description || ""),
    el("td", {}, (c.tags || []).join(", ")),
    el("td", {}, timeEl(c.updated_at)))));
}

load().catch((error) => problem(`Cannot load credentials: ${error.message}`));
