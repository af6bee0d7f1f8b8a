// Shared by every page: the API client (with the token), DOM helpers, status badges, polling.

const TOKEN_KEY = "noetl.token";

// Optional API parts this server has ("rerun", "logs", "schedules"), named by the page shell.
export function has(feature) {
  return (document.body.dataset.features || "").split(" ").includes(feature);
}

export class ApiError extends Error {
  constructor(status, body) {
    super((body && body.message) || `HTTP ${status}`);
    this.status = status;
    this.body = body;
  }
}

function token() {
  try { return localStorage.getItem(TOKEN_KEY) || ""; } catch (e) { return ""; }
}

let asking = null;

function askToken(refused) {
  if (asking) return asking;
  const dialog = document.getElementById("token-dialog");
  const form = document.getElementById("token-form");
  const input = document.getElementById("token-input");
  document.getElementById("token-error").hidden = !refused;
  asking = new Promise((resolve) => {
    form.addEventListener("submit", () => {
      localStorage.setItem(TOKEN_KEY, input.value.trim());
      input.value = "";
      asking = null;
      document.getElementById("forget-token").hidden = false;
      resolve();
    }, { once: true });
  });
  dialog.showModal();
  input.focus();
  return asking;
}

// GET or POST JSON under /api; asks for the token on 401 and retries.
export async function api(path, options = {}) {
  for (;;) {
    const headers = { accept: "application/json" };
    if (options.body !== undefined) headers["content-type"] = "application/json";
    const saved = token();
    if (saved) headers.authorization = `Bearer ${saved}`;
    const response = await fetch(path, {
      method: options.method || (options.body !== undefined ? "POST" : "GET"),
      headers,
      body: options.body !== undefined ? JSON.stringify(options.body) : undefined,
    });
    if (response.status === 401) {
      await askToken(Boolean(saved));
      continue;
    }
    let body = null;
    const text = await response.text();
    if (text) {
      try { body = JSON.parse(text); } catch (e) { body = { message: text }; }
    }
    if (!response.ok) throw new ApiError(response.status, body);
    return body;
  }
}

// el("a", {href: "/x", class: "c"}, "text", child) — text is always set as text, never HTML.
export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    if (key === "class") node.className = value;
    else if (key === "dataset") Object.assign(node.dataset, value);
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value === true ? "" : value);
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : String(child));
  }
  return node;
}

const SVG = "http://www.w3.org/2000/svg";
export function svg(tag, attrs = {}, ...children) {
  const node = document.createElementNS(SVG, tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === null || value === undefined) continue;
    if (key === "class") node.setAttribute("class", value);
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value);
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : String(child));
  }
  return node;
}

// Statuses carry a symbol and a word, so they read without colour.
const SYMBOLS = {
  running: "◐", completed: "✓", failed: "✗", cancelled: "⊘", waiting: "○", skipped: "↷",
  pending: "○", claimed: "◐", ready: "●", stopped: "○", stopping: "◑", active: "●", paused: "‖",
};
export function symbol(status) {
  return SYMBOLS[String(status || "").toLowerCase()] || "•";
}
export function badge(status) {
  const word = String(status || "unknown").toLowerCase();
  return el("span", { class: `badge s-${word}`, dataset: { status: word } },
    el("span", { "aria-hidden": "true" }, symbol(word)), ` ${word}`);
}

export function when(iso) {
  if (!iso) return "";
  const date = new Date(iso);
  return date.toLocaleString(undefined, {
    year: "numeric", month: "short", day: "2-digit",
    hour: "2-digit", minute: "2-digit", second: "2-digit",
  });
}

// 13:06:10.123: for rows of one execution, whose date is in the page's header.
export function clockEl(iso) {
  if (!iso) return "";
  const date = new Date(iso);
  const text = date.toLocaleTimeString(undefined, { hour12: false }) + `.${String(date.getMilliseconds()).padStart(3, "0")}`;
  return el("time", { datetime: iso, title: date.toLocaleString() }, text);
}

export function timeEl(iso) {
  return iso ? el("time", { datetime: iso, title: iso }, when(iso)) : "";
}

export function seconds(value) {
  if (value === null || value === undefined) return "";
  if (value < 1) return `${Math.round(value * 1000)} ms`;
  if (value < 60) return `${value.toFixed(value < 10 ? 2 : 1)} s`;
  const minutes = Math.floor(value / 60);
  if (minutes < 60) return `${minutes} min ${Math.round(value % 60)} s`;
  return `${Math.floor(minutes / 60)} h ${minutes % 60} min`;
}

export function pretty(value) {
  return JSON.stringify(value, null, 2);
}

export function problem(message) {
  const box = document.getElementById("problem");
  if (!message) { box.hidden = true; box.textContent = ""; return; }
  box.textContent = message;
  box.hidden = false;
}

// Calls `tick` every `ms` while the tab is visible; stops when `tick` returns false.
export function poll(tick, ms) {
  let timer = null;
  let stopped = false;
  const live = document.getElementById("live");
  async function run() {
    timer = null;
    if (stopped) return;
    if (document.hidden) { timer = setTimeout(run, ms); return; }
    let again = true;
    try {
      again = (await tick()) !== false;
      problem(null);
    } catch (error) {
      problem(`Cannot reach the server: ${error.message}`);
    }
    if (again) {
      live.textContent = "● live";
      timer = setTimeout(run, ms);
    } else {
      live.textContent = "";
    }
  }
  run();
  return { stop() { stopped = true; if (timer) clearTimeout(timer); live.textContent = ""; } };
}

function setupChrome() {
  const button = document.getElementById("theme");
  const order = ["auto", "light", "dark"];
  const current = () => localStorage.getItem("noetl.theme") || "auto";
  const show = () => { button.textContent = `Theme: ${current()}`; };
  button.addEventListener("click", () => {
    const next = order[(order.indexOf(current()) + 1) % order.length];
    if (next === "auto") {
      localStorage.removeItem("noetl.theme");
      delete document.documentElement.dataset.theme;
    } else {
      localStorage.setItem("noetl.theme", next);
      document.documentElement.dataset.theme = next;
    }
    show();
  });
  show();
  const forget = document.getElementById("forget-token");
  forget.hidden = !token();
  forget.addEventListener("click", () => {
    localStorage.removeItem(TOKEN_KEY);
    forget.hidden = true;
    location.reload();
  });
  document.getElementById("token-dialog").addEventListener("cancel", (event) => event.preventDefault());
}

setupChrome();
