// What every dashboard page shares: the key (sessionStorage only), API calls with it, the sign-in
// page, the job event stream, downloads through Blob URLs, and small formatting helpers.
// Data is always put into the page with textContent, never as HTML.
"use strict";

const Squeezer = (() => {
  const STORAGE = "squeezer.apiKey";

  class ApiError extends Error {
    constructor(status, body) {
      super((body && (body.detail || body.title)) || `HTTP ${status}`);
      this.status = status;
      this.body = body || {};
    }
  }

  const key = () => sessionStorage.getItem(STORAGE);

  function headers(extra, secret) {
    return { ...extra, Authorization: `Bearer ${secret || key()}` };
  }

  async function body(response) {
    const type = response.headers.get("content-type") || "";
    return type.includes("json") ? response.json() : { detail: await response.text() };
  }

  // A refused key anywhere means the sign-in page: nothing fetched with it is shown.
  function refused(detail) {
    sessionStorage.removeItem(STORAGE);
    showSignIn(`The key was refused: ${detail}`);
    return new ApiError(401, { detail });
  }

  async function api(path, { method = "GET", json, form } = {}) {
    const init = { method, headers: headers(json ? { "Content-Type": "application/json" } : {}) };
    if (json !== undefined) init.body = JSON.stringify(json);
    if (form !== undefined) init.body = form;
    const response = await fetch(path, init);
    if (response.status === 401) throw refused((await body(response)).detail);
    if (!response.ok) throw new ApiError(response.status, await body(response));
    return response.status === 204 ? null : response.json();
  }

  // Server-sent events over fetch (EventSource cannot send the key header). Reconnects with
  // Last-Event-ID until `end` arrives or `stop()` is called.
  function events(path, handlers) {
    let lastId = null;
    let stopped = false;
    const controller = new AbortController();
    async function connect() {
      const extra = lastId ? { "Last-Event-ID": lastId } : {};
      const response = await fetch(path, { headers: headers(extra), signal: controller.signal });
      if (response.status === 401) throw refused((await body(response)).detail);
      if (!response.ok) throw new ApiError(response.status, await body(response));
      const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
      let buffer = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) return false;
        buffer += value.replace(/\r\n?/g, "\n");
        let cut;
        while ((cut = buffer.indexOf("\n\n")) >= 0) {
          const block = buffer.slice(0, cut);
          buffer = buffer.slice(cut + 2);
          const fields = { event: "message", data: [] };
          for (const line of block.split("\n")) {
            if (!line || line.startsWith(":")) continue;
            const colon = line.indexOf(":");
            const name = colon < 0 ? line : line.slice(0, colon);
            const text = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
            if (name === "data") fields.data.push(text);
            else fields[name] = text;
          }
          if (!fields.data.length) continue;
          if (fields.id) lastId = fields.id;
          const handler = handlers[fields.event];
          if (handler) handler(JSON.parse(fields.data.join("\n")));
          if (fields.event === "end") return true;
        }
      }
    }
    (async () => {
      while (!stopped) {
        try {
          if (await connect()) return;
        } catch (error) {
          if (stopped || error.status === 401 || error.status === 404) {
            if (!stopped && handlers.error) handlers.error(error);
            return;
          }
        }
        await new Promise((resolve) => setTimeout(resolve, 1000));
      }
    })();
    return { stop: () => { stopped = true; controller.abort(); } };
  }

  // The file is fetched with the key header and saved from a Blob URL: a plain link could not carry the key.
  async function download(url, filename) {
    const response = await fetch(url, { headers: headers({}) });
    if (response.status === 401) throw refused((await body(response)).detail);
    if (!response.ok) throw new ApiError(response.status, await body(response));
    const blob = await response.blob();
    const href = URL.createObjectURL(blob);
    const link = el("a", { href, download: filename });
    document.body.append(link);
    link.click();
    link.remove();
    setTimeout(() => URL.revokeObjectURL(href), 10000);
  }

  function el(tag, attributes = {}, ...children) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(attributes)) {
      if (value === null || value === undefined || value === false) continue;
      if (name === "class") node.className = value;
      else if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
      else node.setAttribute(name, value === true ? "" : value);
    }
    for (const child of children) {
      if (child === null || child === undefined) continue;
      node.append(child instanceof Node ? child : String(child));
    }
    return node;
  }

  const number = (value, digits = 2) =>
    value === null || value === undefined ? "–" : Number(value).toFixed(digits);
  const percent = (value) => (value === null || value === undefined ? "–" : `${(100 * value).toFixed(1)} %`);
  const when = (iso) => (iso ? new Date(iso).toLocaleString() : "–");
  function bytes(size) {
    const units = ["B", "KiB", "MiB", "GiB"];
    let value = size;
    let unit = 0;
    while (value >= 1024 && unit < units.length - 1) {
      value /= 1024;
      unit += 1;
    }
    return `${value.toFixed(unit ? 1 : 0)} ${units[unit]}`;
  }

  // Epochs of a job: "3 of 10" while it runs; a finished job shows what it trained ("done after 0 of 3
  // epochs" for one that met its budget at once), never "0/3" as if it had stalled.
  function progress(job, short = false) {
    if (!job.total_epochs) return short ? `${job.epoch}` : `epoch ${job.epoch}`;
    if (job.terminal && job.epoch < job.total_epochs) {
      return short ? `${job.epoch} (of ≤${job.total_epochs})` : `done after ${job.epoch} of at most ${job.total_epochs} epochs`;
    }
    return short ? `${job.epoch}/${job.total_epochs}` : `epoch ${job.epoch} of ${job.total_epochs}`;
  }

  // An API problem as text: its title, detail and, where the API names it, the JSON path.
  function problemText(error) {
    const problem = error.body || {};
    const path = problem.path || (problem.errors && problem.errors[0] && problem.errors[0].path);
    return `${error.status} ${problem.title || "Error"}: ${problem.detail || error.message}${path ? ` (at ${path})` : ""}`;
  }

  function showSignIn(message) {
    document.getElementById("page").hidden = true;
    document.getElementById("sign-out").hidden = true;
    document.getElementById("sign-in").hidden = false;
    document.getElementById("sign-in-error").textContent = message || "";
    document.getElementById("api-key").focus();
  }

  function wireSignIn() {
    document.getElementById("sign-in-form").addEventListener("submit", async (event) => {
      event.preventDefault();
      const secret = document.getElementById("api-key").value.trim();
      const response = await fetch("/v1/jobs?limit=1", { headers: headers({}, secret) });
      if (!response.ok) {
        const problem = await body(response);
        document.getElementById("sign-in-error").textContent =
          response.status === 401 ? `The key was refused: ${problem.detail}` : `${response.status}: ${problem.detail}`;
        return;
      }
      sessionStorage.setItem(STORAGE, secret);
      location.reload();
    });
    document.getElementById("sign-out").addEventListener("click", () => {
      sessionStorage.removeItem(STORAGE);
      showSignIn("Signed out.");
    });
  }

  // A page's script: `Squeezer.page(async (main) => ...)`; it runs only with a key in this tab.
  function page(init) {
    const start = async () => {
      wireSignIn();
      if (!key()) {
        showSignIn("");
        return;
      }
      const main = document.getElementById("page");
      try {
        await init(main);
        if (!key()) return; // refused while loading: the sign-in page is showing
        main.hidden = false;
        document.getElementById("sign-out").hidden = false;
        performance.mark("squeezer:ready"); // the page shows its data (bench/bench_ui.py reads this)
      } catch (error) {
        if (error.status === 401) return;
        main.hidden = false;
        document.getElementById("sign-out").hidden = false;
        const target = main.querySelector(".error") || main;
        target.textContent = problemText(error);
      }
    };
    if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
    else start();
  }

  return { ApiError, api, events, download, el, number, percent, when, bytes, progress, problemText, page };
})();
