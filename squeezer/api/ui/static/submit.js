// Submit a job: the files go up as artifacts (POST /v1/artifacts), then POST /v1/jobs names them with
// the config and the recipe. With "search instead", POST /v1/searches names them with the chosen
// candidates (the config above may be one). An API problem is shown with the JSON path it names.
"use strict";

Squeezer.page(async (main) => {
  const { api, el } = Squeezer;
  const form = main.querySelector("#submit-form");
  const config = main.querySelector("#config");
  const configFile = main.querySelector("#config-file");
  const sample = main.querySelector("#sample");
  const progress = main.querySelector("#progress");
  const samples = new Map();

  for (const s of await api("/v1/sample-configs")) {
    samples.set(s.name, s);
    sample.append(el("option", { value: s.name }, s.name));
  }
  sample.addEventListener("change", () => {
    const chosen = samples.get(sample.value);
    main.querySelector("#sample-description").textContent = chosen ? chosen.description : "";
    if (chosen) {
      config.value = JSON.stringify(chosen.config, null, 2);
      configFile.value = "";
    }
  });
  configFile.addEventListener("change", () => {
    if (configFile.files.length) sample.value = "";
  });
  const asSearch = main.querySelector("#as-search");
  asSearch.addEventListener("change", () => {
    main.querySelector("#search-fields").hidden = !asSearch.checked;
    main.querySelector("#submit").textContent = asSearch.checked ? "Start the search" : "Submit";
  });

  function showProblem(title, detail, path, list = []) {
    const box = main.querySelector("#problem");
    box.hidden = false;
    main.querySelector("#problem-title").textContent = title;
    main.querySelector("#problem-detail").textContent = detail;
    main.querySelector("#problem-path").textContent = path || "–";
    main.querySelector("#problem-list").replaceChildren(
      ...list.map((p) => el("li", {}, typeof p === "string" ? p : `${p.path}: ${p.message}`)),
    );
  }

  async function upload(input, kind) {
    const file = input.files[0];
    progress.textContent = `Uploading ${file.name}…`;
    const data = new FormData();
    data.append("kind", kind);
    data.append("file", file, file.name);
    try {
      return (await api("/v1/artifacts", { method: "POST", form: data })).id;
    } catch (error) {
      error.field = input.id;
      throw error;
    }
  }

  const mode = main.querySelector("#mode");
  const valInput = main.querySelector("#val");
  mode.addEventListener("change", () => {
    const ptq = mode.value === "ptq"; // calibration only: validation data only for accuracy control
    for (const field of main.querySelectorAll(".ptq-only")) field.hidden = !ptq;
    main.querySelector("#val-optional").hidden = !ptq;
    valInput.required = !ptq;
  });

  function recipe() {
    const value = (id) => main.querySelector(`#${id}`).value;
    const extra = {};
    if (mode.value === "ptq") {
      extra.mode = "ptq";
      if (value("max_drop") !== "") extra.max_drop = Number(value("max_drop"));
      if (value("model_type")) extra.model_type = value("model_type");
    }
    return {
      ...extra,
      task: value("task"),
      optimizer: value("optimizer"),
      lr: Number(value("lr")),
      lr_schedule: value("lr_schedule"),
      batch_size: Number(value("batch_size")),
      epochs: Number(value("epochs")),
      seed: Number(value("seed")),
    };
  }

  function searchBody(ids, ownConfig) {
    const value = (id) => main.querySelector(`#${id}`).value;
    const candidates = [...main.querySelectorAll("#search-candidates input:checked")].map((box) => box.value);
    if (main.querySelector("#search-own").checked) candidates.push({ name: value("search-own-name"), config: ownConfig });
    const body = {
      name: value("name"),
      ...ids,
      accuracy: { maximal_absolute_accuracy_degradation: Number(value("search-drop")) },
      objective: value("search-objective"),
      batch_size: Number(value("search-batch")),
      candidates,
      recipe: recipe(),
      priority: Number(value("priority")),
    };
    if (value("search-epochs")) body.budget = { max_total_epochs: Number(value("search-epochs")) };
    return body;
  }

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    main.querySelector("#problem").hidden = true;
    const button = main.querySelector("#submit");
    let inlineConfig = null;
    const ownCandidate = main.querySelector("#search-own").checked;
    if (!configFile.files.length && (!asSearch.checked || ownCandidate)) {
      try {
        inlineConfig = JSON.parse(config.value);
      } catch (error) {
        showProblem("The config is not JSON", error.message, "$");
        return;
      }
    }
    button.disabled = true;
    try {
      if (asSearch.checked && configFile.files.length && ownCandidate) {
        try {
          inlineConfig = JSON.parse(await configFile.files[0].text()); // a candidate's config goes inline
        } catch (error) {
          showProblem("The config file is not JSON", error.message, "$");
          return;
        }
      }
      const ids = {
        model: await upload(main.querySelector("#model"), "model"),
        train_data: await upload(main.querySelector("#train"), "dataset"),
        val_data: valInput.files.length ? await upload(valInput, "dataset") : null,
      };
      if (asSearch.checked) {
        const search = await api("/v1/searches", { method: "POST", json: searchBody(ids, inlineConfig) });
        location.assign(`/ui/searches/${encodeURIComponent(search.id)}`);
        return;
      }
      const body = {
        name: main.querySelector("#name").value,
        ...ids,
        // post-training quantization reads target device, runtime and scopes from the config, if any
        config: configFile.files.length ? await upload(configFile, "config") : inlineConfig,
        recipe: recipe(),
        priority: Number(main.querySelector("#priority").value),
      };
      progress.textContent = "Submitting…";
      const job = await api("/v1/jobs", { method: "POST", json: body });
      location.assign(`/ui/jobs/${encodeURIComponent(job.id)}`);
    } catch (error) {
      progress.textContent = "";
      if (error.status === 401) return;
      const problem = error.body || {};
      const path = problem.path || (problem.errors && problem.errors[0] && problem.errors[0].path);
      const title = `${error.status} ${problem.title || "Error"}${error.field ? ` (${error.field} file)` : ""}`;
      showProblem(title, problem.detail || error.message, path, problem.problems || problem.errors || []);
    } finally {
      button.disabled = false;
    }
  });
});
