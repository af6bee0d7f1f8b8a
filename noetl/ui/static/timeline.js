// The timeline (Gantt): one row per step from its first event to its last outcome, with one
// bar per command (and its attempts) for steps of up to 25 commands; loops are aggregated.
import { el, seconds } from "./noetl.js";

function at(iso) { return iso ? Date.parse(iso) : null; }

export function drawTimeline(container, data) {
  const start = at(data.created_at);
  const ends = data.steps.map((s) => at(s.ended_at) || at(s.started_at)).filter(Boolean);
  const end = Math.max(at(data.ended_at) || 0, Date.now() * (data.ended_at ? 0 : 1), ...ends);
  const span = Math.max(end - start, 1);
  const place = (bar, from, to) => {
    const left = ((from - start) / span) * 100;
    const width = Math.max(((to - from) / span) * 100, 0.4);
    bar.style.left = `${Math.max(0, Math.min(left, 100))}%`;
    bar.style.width = `${Math.min(width, 100 - left)}%`;
  };
  const rows = data.steps.map((s) => {
    const from = at(s.started_at);
    const to = at(s.ended_at) || end;
    const open = !s.ended_at || s.commands > s.completed + s.failed + s.cancelled;
    const outcome = s.failed ? "failed" : open ? "running" : "completed";
    const track = el("div", { class: "track" });
    const bar = el("div", { class: `bar s-${outcome}`, title: `${s.step}: ${seconds((to - from) / 1000)}` });
    place(bar, from, to);
    track.append(bar);
    for (const c of s.commands_drawn || []) {
      const first = at(c.claimed_at) || at(c.issued_at);
      const last = at(c.ended_at) || end;
      const word = (c.outcome || "command.running").split(".")[1];
      const piece = el("div", {
        class: `command s-${word}`,
        title: `${c.command_id}: ${word}, ${c.attempts} attempt(s)${c.worker_id ? ` on ${c.worker_id}` : ""}, ${seconds((last - first) / 1000)}`,
      }, c.attempts > 1 ? `×${c.attempts}` : "");
      place(piece, first, last);
      track.append(piece);
    }
    const facts = [`${s.commands} command${s.commands === 1 ? "" : "s"}`];
    if (s.attempts > s.commands) facts.push(`${s.attempts} attempts`);
    if (s.failed) facts.push(`${s.failed} failed`);
    if (s.cancelled) facts.push(`${s.cancelled} cancelled`);
    return el("div", { class: "row", role: "row" },
      el("div", { class: "label", role: "rowheader" }, s.step),
      el("div", { class: "cell", role: "cell" }, track),
      el("div", { class: "facts", role: "cell" }, `${seconds((to - from) / 1000)} · ${facts.join(", ")}`));
  });
  const scale = el("div", { class: "row scale", role: "row" },
    el("div", { class: "label", role: "rowheader" }, "execution"),
    el("div", { class: "cell", role: "cell" }, el("div", { class: "track axis" },
      el("span", { class: "tick start" }, "0"), el("span", { class: "tick end" }, seconds(span / 1000)))),
    el("div", { class: "facts", role: "cell" }, data.ended_at ? `total ${seconds(span / 1000)}` : "running"));
  container.replaceChildren(el("div", { role: "table", "aria-label": "Timeline of steps" }, scale, ...rows));
}
