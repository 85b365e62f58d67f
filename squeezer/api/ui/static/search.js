// One search: its facts, the candidates table (each row links to the candidate's job page) and a
// scatter of metric against measured latency with the Pareto front joined, the recommended candidate
// ringed and the metric floor dashed; all redrawn from every `search` event of its /events stream.
"use strict";

Squeezer.page(async (main) => {
  const { api, events, el, number, percent, when, bytes, problemText } = Squeezer;
  const searchId = main.dataset.searchId;
  const base = `/v1/searches/${encodeURIComponent(searchId)}`;
  const errorLine = main.querySelector("#search-error");
  const COLORS = { point: "#57606a", front: "#1a7f37", recommended: "#bf8700", floor: "#d1242f", label: "#1f2328" };

  // ------------------------------------------------------------------ the scatter
  // uPlot's x must be sorted and shared by the series, so the finished candidates are sorted by latency
  // and each series holds a metric at the candidates it shows (null elsewhere): all of them as points,
  // the front joined by a line across its gaps, the recommended one as a large ring.
  const container = main.querySelector("#scatter");
  let plotted = { points: [], front: [], recommended: null, floor: null };

  function padded(min, max) {
    if (min === null || max === null || !Number.isFinite(min) || !Number.isFinite(max)) return [0, 1];
    const span = max - min || Math.abs(max) * 0.1 || 1;
    return [min - 0.15 * span, max + 0.15 * span];
  }

  // ticks with as many decimals as their spacing needs (a tiny model's latency is a few hundredths of a ms)
  function tickText(u, ticks) {
    const step = ticks.length > 1 ? Math.abs(ticks[1] - ticks[0]) : Math.abs(ticks[0] || 1);
    const digits = Math.max(0, Math.min(8, -Math.floor(Math.log10(step || 1))));
    return ticks.map((t) => t.toFixed(digits));
  }

  function drawExtras(u) {
    const ctx = u.ctx;
    const ratio = window.devicePixelRatio || 1;
    const { left, top, width, height } = u.bbox;
    ctx.save();
    ctx.font = `${12 * ratio}px system-ui, sans-serif`;
    if (plotted.floor !== null) {
      const y = u.valToPos(plotted.floor, "y", true);
      if (y >= top && y <= top + height) {
        ctx.strokeStyle = COLORS.floor;
        ctx.fillStyle = COLORS.floor;
        ctx.lineWidth = 1.5 * ratio;
        ctx.setLineDash([6 * ratio, 4 * ratio]);
        ctx.beginPath();
        ctx.moveTo(left, y);
        ctx.lineTo(left + width, y);
        ctx.stroke();
        ctx.setLineDash([]);
        ctx.textAlign = "right";
        ctx.fillText(`metric floor ${number(plotted.floor)}`, left + width - 4 * ratio, y + 14 * ratio);
      }
    }
    // each point's name beside it, moved down a line while it would overlap a name already drawn
    ctx.fillStyle = COLORS.label;
    ctx.textAlign = "left";
    const lineHeight = 15 * ratio;
    const marker = 8 * ratio;
    const drawn = plotted.points.map((p) => ({
      x: u.valToPos(p.latency_ms, "x", true) - marker,
      y: u.valToPos(p.metric, "y", true) + marker,
      w: 2 * marker,
    }));
    for (const p of plotted.points) {
      const x = u.valToPos(p.latency_ms, "x", true);
      const w = ctx.measureText(p.name).width;
      const textX = x > left + 0.7 * width ? x - 10 * ratio - w : x + 10 * ratio;
      let textY = u.valToPos(p.metric, "y", true) - 8 * ratio;
      const overlaps = (b) => textX < b.x + b.w && b.x < textX + w && textY - lineHeight < b.y && b.y - lineHeight < textY;
      while (drawn.some(overlaps)) textY += lineHeight;
      drawn.push({ x: textX, y: textY, w });
      ctx.fillText(p.name, textX, textY);
    }
    ctx.restore();
  }

  const plot = new uPlot(
    {
      width: container.clientWidth || 640,
      height: 340,
      scales: {
        x: { time: false, range: (u, min, max) => padded(min, max) },
        y: {
          range: (u, min, max) => {
            const floor = plotted.floor;
            if (min === null || max === null) return floor === null ? [0, 1] : padded(floor, floor);
            return padded(floor === null ? min : Math.min(min, floor), floor === null ? max : Math.max(max, floor));
          },
        },
      },
      series: [
        { label: "latency ms" },
        { label: "candidate", stroke: COLORS.point, paths: () => null, points: { show: true, size: 9, fill: COLORS.point } },
        {
          label: "Pareto front",
          stroke: COLORS.front,
          width: 2,
          spanGaps: true,
          points: { show: true, size: 11, fill: COLORS.front },
        },
        {
          label: "recommended",
          stroke: COLORS.recommended,
          paths: () => null,
          points: { show: true, size: 22, width: 3, fill: "rgba(0,0,0,0)" },
        },
      ],
      axes: [{ label: "latency (ms)", values: tickText, space: 70 }, { label: "metric", values: tickText }],
      legend: { live: false },
      cursor: { drag: { x: false, y: false } },
      hooks: { draw: [drawExtras] },
    },
    [[], [], [], []],
    container,
  );
  container.chart = plot; // read by the browser tests, with container.plotted
  new ResizeObserver(() => {
    if (container.clientWidth) plot.setSize({ width: container.clientWidth, height: 340 });
  }).observe(container);

  function showScatter(result) {
    const points = result.candidates
      .filter((c) => c.status === "succeeded" && c.metric !== null && c.latency_ms !== null)
      .map((c) => ({
        name: c.name,
        latency_ms: c.latency_ms,
        metric: c.metric,
        on_front: c.on_front,
        recommended: c.name === result.recommended,
      }))
      .sort((a, b) => a.latency_ms - b.latency_ms || a.name.localeCompare(b.name));
    plotted = { points, front: result.front, recommended: result.recommended, floor: result.metric_floor };
    container.plotted = plotted;
    plot.axes[0].label = `latency (ms), ${result.runtime}, batch ${result.batch_size}`;
    plot.setData([
      points.map((p) => p.latency_ms),
      points.map((p) => p.metric),
      points.map((p) => (p.on_front ? p.metric : null)),
      points.map((p) => (p.recommended ? p.metric : null)),
    ]);
    container.dataset.points = String(points.length);
  }

  // ------------------------------------------------------------------ the search
  function facts(target, pairs) {
    target.replaceChildren(...pairs.flatMap(([term, value]) => [el("dt", {}, term), el("dd", {}, value)]));
  }

  const ms = (value) => (value === null ? "–" : value >= 100 ? value.toFixed(0) : value.toPrecision(3));

  function speedup(c) {
    return c.latency_ms && c.fp32_latency_ms ? `${number(c.fp32_latency_ms / c.latency_ms)}×` : "–";
  }

  function candidateRow(c, result) {
    const name = c.job_id ? el("a", { href: `/ui/jobs/${encodeURIComponent(c.job_id)}` }, c.name) : c.name;
    const marks = [c.on_front ? "front" : null, c.name === result.recommended ? "recommended" : null].filter(Boolean);
    return el(
      "tr",
      { "data-candidate": c.name, class: marks.join(" ") || null },
      el("td", {}, name, ...marks.map((m) => el("span", { class: `tag ${m}` }, m))),
      el("td", {}, el("span", { class: `status ${c.status}` }, c.status)),
      el("td", { class: "num" }, c.epochs),
      el("td", { class: "num" }, number(c.metric)),
      el("td", {}, c.within_budget === null ? "–" : c.within_budget ? "yes" : "no"),
      el("td", { class: "num", title: c.latency_ms === null ? null : `${c.latency_ms} ms` }, ms(c.latency_ms)),
      el("td", { class: "num" }, speedup(c)),
      el("td", { class: "num", "data-bytes": c.size_bytes }, c.size_bytes === null ? "–" : bytes(c.size_bytes)),
      el("td", { class: "num" }, percent(c.compression_rate)),
      el("td", { class: c.error ? "error" : "muted" }, c.stopped_reason || c.error || ""),
    );
  }

  function showSearch(search) {
    const result = search.result;
    main.querySelector("#search-name").textContent = search.name;
    document.title = `${search.name} · Squeezer`;
    const status = main.querySelector("#search-status");
    status.textContent = search.status;
    status.className = `status ${search.status}`;
    facts(main.querySelector("#search-facts"), [
      ["Objective", result.objective],
      ["Runtime", result.runtime],
      ["Latency batch size", result.batch_size],
      ["FP32 metric", number(result.fp32_metric)],
      ["Metric floor", number(result.metric_floor)],
      ["Recommended", result.keep_fp32 ? "keep the FP32 model" : result.recommended || "–"],
      ["Why", result.recommendation_note || "–"],
      ["Pareto front", result.front.join(", ") || "–"],
      ["Epochs spent", result.epochs_spent],
      ["Wall time", result.wall_time_s === null ? "–" : `${number(result.wall_time_s, 0)} s`],
      ["Created", when(search.created_at)],
      ["Finished", when(search.finished_at)],
      ["Search id", search.id],
    ]);
    main.querySelector("#latency-heading").textContent = `Latency ms (${result.runtime})`;
    main.querySelector("#candidates tbody").replaceChildren(...result.candidates.map((c) => candidateRow(c, result)));
    main.querySelector("#settings").textContent = JSON.stringify(search.settings, null, 2);
    main.querySelector("#cancel").hidden = search.terminal;
    main.querySelector("#delete").hidden = !search.terminal;
    showScatter(result);
  }

  async function act(request) {
    try {
      const search = await request();
      if (search) showSearch(search);
    } catch (error) {
      if (error.status !== 401) errorLine.textContent = problemText(error);
    }
  }

  main.querySelector("#cancel").addEventListener("click", () => act(() => api(`${base}/cancel`, { method: "POST" })));
  main.querySelector("#delete").addEventListener("click", async () => {
    if (!confirm("Delete this search and its candidate jobs (their metrics and exports)?")) return;
    await act(async () => {
      await api(base, { method: "DELETE" });
      location.assign("/ui/searches");
    });
  });

  showSearch(await api(base)); // a search of another key, or none: 404, shown instead of the page
  events(`${base}/events`, {
    search: showSearch,
    end: (end) => {
      performance.mark("squeezer:history");
      if (end.status === "deleted") errorLine.textContent = "This search was deleted.";
    },
    error: (error) => (errorLine.textContent = problemText(error)),
  });
});
