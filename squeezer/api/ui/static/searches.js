// The search list: GET /v1/searches with the page in the URL (?offset=), so a view can be linked and
// reloaded; refreshed every few seconds while a listed search is still queued or running.
"use strict";

Squeezer.page(async (main) => {
  const { api, el, when } = Squeezer;
  const LIMIT = 50;
  const state = { offset: Math.max(0, Number(new URLSearchParams(location.search).get("offset")) || 0) };
  const rows = main.querySelector("#searches tbody");
  let timer = null;

  function go(offset) {
    state.offset = offset;
    history.replaceState(null, "", `${location.pathname}${offset ? `?offset=${offset}` : ""}`);
    return load();
  }

  function row(search) {
    const candidates = search.result.candidates;
    const href = `/ui/searches/${encodeURIComponent(search.id)}`;
    return el(
      "tr",
      { "data-search-id": search.id },
      el("td", {}, el("a", { href }, search.name)),
      el("td", {}, el("span", { class: `status ${search.status}` }, search.status)),
      el("td", { class: "num" }, candidates.length),
      el("td", { class: "num" }, candidates.filter((c) => c.terminal).length),
      el("td", {}, search.result.recommended || "–"),
      el("td", {}, search.settings.objective),
      el("td", {}, when(search.created_at)),
      el("td", {}, when(search.finished_at)),
    );
  }

  async function load() {
    clearTimeout(timer);
    const page = await api(`/v1/searches?${new URLSearchParams({ offset: state.offset, limit: LIMIT })}`);
    rows.replaceChildren(...page.items.map(row));
    if (!page.items.length) {
      rows.append(el("tr", {}, el("td", { colspan: 8, class: "muted" }, "No searches. POST /v1/searches or `squeezer search` starts one.")));
    }
    const last = page.offset + page.items.length;
    main.querySelector("#range").textContent = page.total ? `${page.offset + 1}–${last} of ${page.total}` : "";
    main.querySelector("#prev").disabled = page.offset === 0;
    main.querySelector("#next").disabled = last >= page.total;
    if (page.items.some((s) => !s.terminal)) timer = setTimeout(() => load().catch(() => {}), 3000);
  }

  main.querySelector("#prev").addEventListener("click", () => go(Math.max(0, state.offset - LIMIT)));
  main.querySelector("#next").addEventListener("click", () => go(state.offset + LIMIT));
  await load();
});
