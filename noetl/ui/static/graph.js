// The step graph: boxes and arcs placed by the server (noetl/ui/layout.py), drawn as SVG.
// Each box is a link (keyboard: Tab, Enter); its status shows as a word, a symbol and a border.
import { svg, symbol } from "./noetl.js";

function clip(text, size) {
  const value = String(text ?? "");
  return value.length > size ? `${value.slice(0, size - 1)}…` : value;
}

export function drawGraph(figure, graph, onSelect) {
  const { width: w, height: h } = graph.box;
  const drawing = svg("svg", {
    viewBox: `0 0 ${graph.width} ${graph.height}`, width: graph.width, height: graph.height,
    role: "group", "aria-label": `Step graph: ${graph.steps.length} steps`, class: "dag",
  });
  drawing.append(svg("defs", {}, svg("marker", {
    id: "arrow", viewBox: "0 0 10 10", refX: "8", refY: "5", markerWidth: "7", markerHeight: "7", orient: "auto-start-reverse",
  }, svg("path", { d: "M0,0 L10,5 L0,10 z", class: "arrowhead" }))));
  const arcs = svg("g", { class: "arcs" });
  for (const arc of graph.arcs) {
    const kind = [arc.back ? "back" : "", arc.when ? "conditional" : "", arc.mode].filter(Boolean).join(" ");
    const title = `${arc.source} → ${arc.target}${arc.when ? ` when ${arc.when}` : ""}${arc.back ? " (back arc)" : ""}`;
    arcs.append(svg("path", { d: arc.path, class: `arc ${kind}`, "marker-end": "url(#arrow)", dataset: null },
      svg("title", {}, title)));
    if (arc.when) {
      arcs.append(svg("text", { x: arc.label_x, y: arc.label_y, class: "arc-label", "text-anchor": arc.back ? "end" : "middle" },
        svg("title", {}, arc.when), clip(arc.when.replace(/^\{\{\s*|\s*\}\}$/g, ""), 30)));
    }
  }
  drawing.append(arcs);
  const boxes = svg("g", { class: "steps" });
  for (const step of graph.steps) {
    const kind = step.loop ? `${step.kind} · ${step.loop.split(" ")[0]} loop` : step.kind;
    const link = svg("a", {
      href: `#step-${encodeURIComponent(step.step)}`, class: "step", "data-step": step.step,
      "data-status": "waiting", "aria-label": `${step.step}: waiting`,
    },
      svg("title", {}, [step.step, step.desc, step.loop ? `loop: ${step.loop}` : ""].filter(Boolean).join("\n")),
      svg("rect", { x: step.x, y: step.y, width: w, height: h, rx: 8, class: "box" }),
      svg("text", { x: step.x + 12, y: step.y + 22, class: "name" }, clip(step.step, 24)),
      svg("text", { x: step.x + 12, y: step.y + 40, class: "kind" }, clip(kind, 30)),
      svg("text", { x: step.x + 12, y: step.y + 56, class: "state" }, "○ waiting"),
      step.loop ? svg("rect", { x: step.x + 1, y: step.y + h - 5, width: 0, height: 4, class: "loop-bar" }) : null,
      step.step === graph.entry ? svg("text", { x: step.x + w - 10, y: step.y + 22, class: "entry", "text-anchor": "end" }, "start") : null);
    link.addEventListener("click", (event) => {
      event.preventDefault();
      history.replaceState(null, "", `#step-${encodeURIComponent(step.step)}`);
      onSelect(step.step);
    });
    boxes.append(link);
  }
  drawing.append(boxes);
  figure.append(drawing);
}

export function paintGraph(figure, states, selected) {
  const byName = new Map(states.map((s) => [s.step, s]));
  for (const link of figure.querySelectorAll("a.step")) {
    const name = link.getAttribute("data-step");
    const state = byName.get(name) || { status: "waiting", runs: 0 };
    const loop = state.loop;
    let words = `${symbol(state.status)} ${state.status}`;
    if (loop) words += ` · ${loop.succeeded + loop.failed}/${loop.count}`;
    else if (state.runs > 1) words += ` · ${state.runs} runs`;
    link.setAttribute("data-status", state.status);
    link.setAttribute("aria-label", `${name}: ${state.status}${loop ? `, ${loop.succeeded} done, ${loop.failed} failed, ${loop.in_flight} in flight of ${loop.count}` : ""}`);
    link.classList.toggle("selected", name === selected);
    link.querySelector("text.state").textContent = words;
    const bar = link.querySelector("rect.loop-bar");
    if (bar && loop) {
      const box = link.querySelector("rect.box");
      const full = Number(box.getAttribute("width")) - 2;
      bar.setAttribute("width", String(loop.count ? (full * (loop.succeeded + loop.failed)) / loop.count : 0));
    }
  }
}
