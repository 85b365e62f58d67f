// The job list: GET /v1/jobs with the status filter and the page in the URL (?status=&offset=), so a
// view can be linked and reloaded; refreshed every few seconds while a listed job is still active.
"use strict";

Squeezer.page(async (main) => {
  const { api, el, number, percent, when } = Squeezer;
  const LIMIT = 50;
  const params = new URLSearchParams(location.search);
  const state = { status: params.get("status") || "", offset: Math.max(0, Number(params.get("offset")) || 0) };
  const filter = main.querySelector("#status-filter");
  const rows = main.querySelector("#jobs tbody");
  let timer = null;

  function go(change) {
    Object.assign(state, change);
    const query = new URLSearchParams();
    if (state.status) query.set("status", state.status);
    if (state.offset) query.set("offset", state.offset);
    history.replaceState(null, "", `${location.pathname}${query.size ? `?${query}` : ""}`);
    return load();
  }

  function row(job) {
    const progress = Squeezer.progress(job, true);
    return el(
      "tr",
      { "data-job-id": job.id },
      el("td", {}, el("a", { href: `/ui/jobs/${encodeURIComponent(job.id)}` }, job.name)),
      el("td", {}, el("span", { class: `status ${job.status}` }, job.status)),
      el("td", {}, job.stage || "–"),
      el("td", { class: "num" }, progress),
      el("td", { class: "num" }, number(job.best_metric)),
      el("td", { class: "num" }, percent(job.compression_rate)),
      el("td", {}, when(job.created_at)),
      el("td", {}, when(job.finished_at)),
    );
  }

  async function load() {
    clearTimeout(timer);
    const query = new URLSearchParams({ offset: state.offset, limit: LIMIT });
    if (state.status) query.set("status", state.status);
    const page = await api(`/v1/jobs?${query}`);
    rows.replaceChildren(...page.items.map(row));
    if (!page.items.length) rows.append(el("tr", {}, el("td", { colspan: 8, class: "muted" }, "No jobs.")));
    const last = page.offset + page.items.length;
    main.querySelector("#range").textContent = page.total ? `${page.offset + 1}–${last} of ${page.total}` : "";
    main.querySelector("#prev").disabled = page.offset === 0;
    main.querySelector("#next").disabled = last >= page.total;
    if (page.items.some((job) => !job.terminal)) timer = setTimeout(() => load().catch(() => {}), 3000);
  }

  filter.value = state.status;
  filter.addEventListener("change", () => go({ status: filter.value, offset: 0 }));
  main.querySelector("#prev").addEventListener("click", () => go({ offset: Math.max(0, state.offset - LIMIT) }));
  main.querySelector("#next").addEventListener("click", () => go({ offset: state.offset + LIMIT }));
  await load();
});
