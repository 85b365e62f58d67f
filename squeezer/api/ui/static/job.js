// One job: facts, live charts fed by its /events stream (one point per `metric` event), the stage
// timeline, the result, the exports (downloaded with the key through Blob URLs), config and recipe.
"use strict";

Squeezer.page(async (main) => {
  const { api, events, download, el, number, percent, when, bytes, problemText } = Squeezer;
  const jobId = main.dataset.jobId;
  const base = `/v1/jobs/${encodeURIComponent(jobId)}`;
  const errorLine = main.querySelector("#job-error");
  const records = [];

  // ------------------------------------------------------------------ charts
  const COLORS = { metric: "#1f6feb", budget: "#d1242f", rate: "#8250df", target: "#bf8700", loss: "#1a7f37", lr: "#9a6700" };

  function chart(id, series, axes, scales = {}) {
    const container = main.querySelector(`#${id}`);
    const data = [[], ...series.map(() => [])];
    const plot = new uPlot(
      {
        width: container.clientWidth || 320,
        height: 220,
        scales: { x: { time: false }, ...scales },
        series: [{ label: "epoch" }, ...series],
        axes: [{ label: "epoch", incrs: [1, 2, 5, 10, 20, 50, 100] }, ...axes],
        legend: { live: false },
      },
      data,
      container,
    );
    container.chart = plot; // read by the browser tests
    // sized to its card once the page is shown, and again whenever the card changes width
    new ResizeObserver(() => {
      if (container.clientWidth) plot.setSize({ width: container.clientWidth, height: 220 });
    }).observe(container);
    let drawing = false;
    return {
      add(epoch, values) {
        data[0].push(epoch);
        values.forEach((value, i) => data[i + 1].push(value ?? null));
        if (drawing) return; // a replayed history is drawn once per frame, not once per epoch
        drawing = true;
        requestAnimationFrame(() => {
          drawing = false;
          plot.setData(data);
          container.dataset.points = String(data[0].length);
        });
      },
    };
  }

  // tick labels with 3 significant digits: uPlot's default rounds 1e-4 to "0" on a learning-rate axis
  const significant = (_, ticks) => ticks.map((t) => (t == null ? "" : String(Number(t.toPrecision(3)))));
  const line = (label, stroke, extra = {}) => ({ label, stroke, width: 2, spanGaps: true, points: { show: true }, ...extra });
  const dashed = (label, stroke) => line(label, stroke, { dash: [6, 4], points: { show: false } });
  const charts = {
    metric: chart("chart-metric", [line("metric", COLORS.metric), dashed("lowest tolerable", COLORS.budget)], [{}]),
    rate: chart(
      "chart-rate",
      [line("compression rate", COLORS.rate), dashed("target", COLORS.target)],
      [{ values: (_, ticks) => ticks.map((t) => `${Math.round(100 * t)}%`) }],
    ),
    loss: chart(
      "chart-loss",
      [line("loss", COLORS.loss, { scale: "loss" }), line("learning rate", COLORS.lr, { scale: "lr" })],
      [
        { scale: "loss", values: significant },
        { scale: "lr", side: 1, grid: { show: false }, size: 70, values: significant },
      ],
      { loss: { auto: true }, lr: { auto: true } },
    ),
  };

  // ------------------------------------------------------------------ stage timeline
  function timeline() {
    const segments = [];
    for (const r of records) {
      const last = segments[segments.length - 1];
      if (last && last.stage === r.stage && last.phase === r.phase) last.to = r.epoch;
      else segments.push({ stage: r.stage, phase: r.phase, from: r.epoch, to: r.epoch });
    }
    main.querySelector("#timeline").replaceChildren(
      ...segments.map((s) =>
        el(
          "div",
          { class: `segment ${s.stage.toLowerCase()}`, style: `flex-grow: ${s.to - s.from + 1}`, title: `${s.stage} (${s.phase})` },
          el("strong", {}, s.stage.replaceAll("_", " ").toLowerCase()),
          el("span", {}, `${s.phase} · epoch${s.from === s.to ? ` ${s.from}` : `s ${s.from}–${s.to}`}`),
        ),
      ),
    );
  }

  function onMetric(m) {
    records.push(m);
    charts.metric.add(m.epoch, [m.metric, m.metric - m.accuracy_budget]);
    charts.rate.add(m.epoch, [m.compression_rate, m.compression_rate_target]);
    charts.loss.add(m.epoch, [m.loss, m.lr]);
    timeline();
  }

  // ------------------------------------------------------------------ the job
  function facts(target, pairs) {
    target.replaceChildren(...pairs.flatMap(([term, value]) => [el("dt", {}, term), el("dd", {}, value)]));
  }

  function showJob(job) {
    main.querySelector("#job-name").textContent = job.name;
    document.title = `${job.name} · Squeezer`;
    const status = main.querySelector("#job-status");
    status.textContent = job.status;
    status.className = `status ${job.status}`;
    facts(main.querySelector("#job-facts"), [
      ["Stage", job.stage ? job.stage.replaceAll("_", " ").toLowerCase() : "–"],
      ["Progress", Squeezer.progress(job)],
      ["Metric", number(job.current_metric)],
      ["Best metric", number(job.best_metric)],
      ["Compression rate", percent(job.compression_rate)],
      ["Accuracy budget", number(job.accuracy_budget)],
      ["Created", when(job.created_at)],
      ["Started", when(job.started_at)],
      ["Finished", when(job.finished_at)],
      ["Job id", job.id],
    ]);
    errorLine.textContent = job.error ? `Failed: ${job.error}` : "";
    main.querySelector("#cancel").hidden = !["queued", "running"].includes(job.status);
    main.querySelector("#delete").hidden = !(job.terminal || job.status === "queued");
    if (job.result) showResult(job.result);
  }

  function showResult(result) {
    main.querySelector("#result-card").hidden = false;
    facts(main.querySelector("#result"), [
      ["Metric", number(result.metric, 4)],
      ["Uncompressed metric", number(result.uncompressed_metric, 4)],
      ["Compression rate", percent(result.compression_rate)],
    ]);
    main.querySelector("#warnings").replaceChildren(...(result.warnings || []).map((w) => el("li", {}, w)));
    const latency = Object.entries(result.latency || {});
    main.querySelector("#latency").hidden = !latency.length;
    main.querySelector("#latency tbody").replaceChildren(
      ...latency.map(([runtime, t]) =>
        el(
          "tr",
          {},
          el("td", {}, runtime),
          el("td", { class: "num" }, number(t.fp32_ms, 3)),
          el("td", { class: "num" }, number(t.compressed_ms, 3)),
          el("td", { class: "num" }, `${number(t.speedup)}×`),
          el("td", { class: "num" }, t.batch_size),
          el("td", { class: "num" }, t.runs),
        ),
      ),
    );
    main.querySelector("#statistics").textContent = JSON.stringify(result.statistics || {}, null, 2);
  }

  async function showExports() {
    const exports = await api(`${base}/artifacts`);
    main.querySelector("#exports-note").textContent = exports.length ? "" : "No exports yet: they appear when the job ends.";
    main.querySelector("#exports tbody").replaceChildren(
      ...exports.map((e) => {
        const button = el("button", { type: "button", class: "quiet", "data-kind": e.kind }, "Download");
        button.addEventListener("click", () =>
          download(e.url, e.filename).catch((error) => (main.querySelector("#exports-note").textContent = problemText(error))),
        );
        return el(
          "tr",
          { "data-kind": e.kind },
          el("td", {}, e.kind),
          el("td", {}, e.filename),
          el("td", { class: "num", title: `${e.size_bytes} bytes`, "data-bytes": e.size_bytes }, bytes(e.size_bytes)),
          el("td", {}, el("code", { class: "sha256" }, e.sha256)),
          el("td", {}, button),
        );
      }),
    );
  }

  async function act(request) {
    try {
      const job = await request();
      if (job) showJob(job);
    } catch (error) {
      if (error.status !== 401) errorLine.textContent = problemText(error);
    }
  }

  main.querySelector("#cancel").addEventListener("click", () => act(() => api(`${base}/cancel`, { method: "POST" })));
  main.querySelector("#delete").addEventListener("click", async () => {
    if (!confirm("Delete this job, its metrics and its exports?")) return;
    await act(async () => {
      await api(base, { method: "DELETE" });
      location.assign("/ui/jobs");
    });
  });

  showJob(await api(base)); // a job of another key, or none: 404, shown instead of the page
  const spec = await api(`${base}/spec`);
  main.querySelector("#config").textContent = JSON.stringify(spec.config, null, 2);
  main.querySelector("#recipe").textContent = JSON.stringify(spec.recipe, null, 2);
  await showExports();
  events(`${base}/events`, {
    metric: onMetric,
    job: showJob,
    end: (end) => {
      performance.mark("squeezer:history"); // every epoch so far is on the charts
      if (end.status === "deleted") errorLine.textContent = "This job was deleted.";
      else showExports().catch((error) => (errorLine.textContent = problemText(error)));
    },
    error: (error) => (errorLine.textContent = problemText(error)),
  });
});
