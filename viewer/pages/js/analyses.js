// The use cases drawn in place (#tools, #chart): valve isolation and up/downstream trace of a
// picked pipe, a cross-section along a drawn line (a section chart beside the 3D view), an
// excavation check of a drawn polygon, placing an incident (editor key) with its dispatch
// context, and a work grid's summary. Every analysis is a function on window.cimtwinViewer
// that the buttons and map clicks call too, so scripts and tests can run them directly:
//   runIsolation(segmentId), runTrace(segmentId, direction, network?), runCrossSection([lon, lat], [lon, lat]),
//   runExcavation([[lon, lat], ...], depth), placeIncident({lon, lat, type, severity, title, key}),
//   showGridSummary(code), gridAt(lon, lat), clearAnalysis(), analysisMarks(kind) -> ids drawn.
// Each run resolves to {answer, ...what was highlighted}. Results are drawn as entities of one
// data source (kind and id in their properties) and as colours of the loaded 3D tile features
// (kept for tiles that load later).
(() => {
  const state = window.cimtwinViewer;
  const COLOURS = {
    valve: "#ff2d2d", isolated: "#ffd400", building: "#ff7a00", trace: "#39ff14",
    section: "#ffffff", excavation: "#ff3b30", incident: "#e0006c", hydrant: "#1e90ff",
    gas: "#ff00ff", power: "#ff0000", grid: "#3d85c6", vertex: "#ffffff",
  };
  const KEY_STORE = "cimtwin.editorKey";
  const MAX_DRAWN = 3000;  // entities per analysis: beyond that the counts say it all
  let source = null;       // Cesium.CustomDataSource of every drawn result
  let pipesTheme = null;   // the /legends theme of CJJ 61 network colours
  let selected = null;     // {id, network, label} of the picked pipe
  const marks = new Map(); // tileset id -> Map(feature id -> css colour)
  const saved = new Map(); // coloured feature -> its colour before
  let painted = new WeakMap(); // tile content -> times the current marks were applied to it
  let els = {};

  // --- requests -------------------------------------------------------------------------

  async function call(method, path, body, extraHeaders = {}) {
    const init = { method, headers: { ...state.headers, ...extraHeaders } };
    if (body !== undefined) {
      init.headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    const answer = await fetch(typeof path === "string" ? state.api(path) : path, init);
    const text = await answer.text();
    let json = null;
    try { json = JSON.parse(text); } catch (e) { /* an error page */ }
    if (!answer.ok) {
      const why = (json && (json.description || json.detail)) || text.slice(0, 200);
      throw new Error(`${method} ${typeof path === "string" ? "/" + path : path.pathname}: HTTP ${answer.status}: ${typeof why === "string" ? why : JSON.stringify(why)}`);
    }
    return json;
  }

  // --- drawing ----------------------------------------------------------------------------

  const css = (c, alpha = 1) => Cesium.Color.fromCssColorString(c).withAlpha(alpha);

  let typicalHeight = 0;  // of the current analysis' 3D geometry: where 2D points go without tiles

  function heightAt(lon, lat) {
    const scene = state.viewer.scene;
    const h = scene.sampleHeightSupported
      ? scene.sampleHeight(Cesium.Cartographic.fromDegrees(lon, lat)) : undefined;
    return Number.isFinite(h) ? h : typicalHeight;
  }

  function typical(coords) {
    const zs = coords.map((c) => c[2]).filter(Number.isFinite).sort((a, b) => a - b);
    if (zs.length) typicalHeight = zs[Math.floor(zs.length / 2)] + 1;
  }

  function addPoint(kind, id, lon, lat, height, colour, label, size = 12) {
    if (source.entities.values.length >= MAX_DRAWN) return null;
    // a position without a height (a valve or building point in 2D) sits on what is drawn
    // there (terrain or a roof), else at the analysis' own typical height
    const z = Number.isFinite(height) ? height : heightAt(lon, lat);
    return source.entities.add({
      position: Cesium.Cartesian3.fromDegrees(lon, lat, z),
      point: {
        pixelSize: size, color: css(colour), outlineColor: Cesium.Color.BLACK, outlineWidth: 2,
        disableDepthTestDistance: Number.POSITIVE_INFINITY,  // seen through the ground
      },
      label: label ? {
        text: label, font: "12px sans-serif", fillColor: Cesium.Color.WHITE,
        outlineColor: Cesium.Color.BLACK, outlineWidth: 3, style: Cesium.LabelStyle.FILL_AND_OUTLINE,
        pixelOffset: new Cesium.Cartesian2(0, -16), disableDepthTestDistance: Number.POSITIVE_INFINITY,
      } : undefined,
      properties: { kind, id },
    });
  }

  // A line with heights (a pipe) is drawn where it is and shows through the ground; one
  // without (an outline, the section line) is draped on the ground and the tilesets.
  function addLine(kind, id, coords, colour, width = 5) {
    if (source.entities.values.length >= MAX_DRAWN || !coords || coords.length < 2) return null;
    const threeD = coords.every((c) => c.length > 2 && Number.isFinite(c[2]));
    const positions = coords.map((c) => Cesium.Cartesian3.fromDegrees(c[0], c[1], threeD ? c[2] : 0));
    const polyline = threeD
      ? { positions, width, material: css(colour), depthFailMaterial: css(colour, 0.6) }
      : { positions, width, material: css(colour), clampToGround: true, classificationType: Cesium.ClassificationType.BOTH };
    return source.entities.add({ polyline, properties: { kind, id } });
  }

  // Outline buildings by their footprints (one OGC API Features request, by code).
  async function outlineBuildings(codes) {
    const some = codes.slice(0, 100);
    if (!some.length) return [];
    const url = state.api("collections/buildings/items");
    url.searchParams.set("filter", `building_code IN (${some.map((c) => `'${String(c).replace(/'/g, "''")}'`).join(",")})`);
    url.searchParams.set("limit", String(some.length));
    const found = await call("GET", url);
    const ids = [];
    for (const f of found.features) {
      const polys = f.geometry.type === "Polygon" ? [f.geometry.coordinates] : f.geometry.coordinates;
      for (const poly of polys) addLine("building-outline", f.id, poly[0].map((c) => c.slice(0, 2)), COLOURS.building, 4);
      ids.push(f.id);
    }
    return ids;
  }

  function lines(geometry) {
    if (!geometry) return [];
    if (geometry.type === "LineString") return [geometry.coordinates];
    if (geometry.type === "MultiLineString") return geometry.coordinates;
    return [];
  }

  // Colour the features with these ids in one tileset, now and in tiles that load later.
  function mark(tilesetId, ids, colour) {
    if (!marks.has(tilesetId)) marks.set(tilesetId, new Map());
    const m = marks.get(tilesetId);
    for (const id of ids) m.set(id, colour);
    painted = new WeakMap();
    const layer = state.layers.find((l) => l.id === tilesetId);
    if (layer) forEachFeature(layer.tileset.root, (f) => paint(tilesetId, f));
    return ids;
  }

  // A merged parent feature (far views: one pipe id standing for a group, property "pipes")
  // is not that one object: only single features are coloured.
  const single = (f) => !(f.getProperty("pipes") > 1);

  function paint(tilesetId, feature) {
    if (!single(feature)) return;
    const m = marks.get(tilesetId);
    const colour = m && m.get(feature.getProperty("id"));
    if (!colour) return;
    const want = css(colour);
    if (feature.color.equalsEpsilon(want, 0.002)) return;
    if (!saved.has(feature)) saved.set(feature, Cesium.Color.clone(feature.color));
    feature.color = want;
  }

  function featuresOf(content, fn) {
    if (!content) return;
    for (let i = 0; i < (content.featuresLength || 0); i++) fn(content.getFeature(i));
    for (const inner of content.innerContents || []) featuresOf(inner, fn);
  }

  function forEachFeature(tile, fn) {
    if (tile.contentReady) featuresOf(tile.content, fn);
    for (const child of tile.children) forEachFeature(child, fn);
  }

  // Ids coloured right now among the loaded features of a tileset (what a test can see).
  function markedNow(tilesetId, colour) {
    const layer = state.layers.find((l) => l.id === tilesetId);
    if (!layer) return [];
    const out = new Set();
    const want = css(colour);
    // colours come back from the tile's batch texture: compared to a byte's precision
    forEachFeature(layer.tileset.root, (f) => {
      if (single(f) && f.color.equalsEpsilon(want, 0.002)) out.add(f.getProperty("id"));
    });
    return [...out];
  }

  // Ids of the loaded single features of a tileset: the ones an analysis can colour.
  function markable(tilesetId) {
    const layer = state.layers.find((l) => l.id === tilesetId);
    const out = new Set();
    if (layer) forEachFeature(layer.tileset.root, (f) => { if (single(f)) out.add(f.getProperty("id")); });
    return [...out];
  }

  function clearDrawing() {
    if (source) source.entities.removeAll();
    for (const [feature, colour] of saved) {
      try { feature.color = colour; } catch (e) { /* its tile was unloaded */ }
    }
    saved.clear();
    marks.clear();
    painted = new WeakMap();
  }

  function clearAnalysis() {
    cancelTool();
    clearDrawing();
    els.result.textContent = "";
    document.getElementById("chart").textContent = "";
  }

  // Fly to what was drawn: the sphere around its positions, seen from the south at -50°.
  function flyToDrawn() {
    const now = Cesium.JulianDate.now();
    const points = [];
    for (const e of source.entities.values) {
      if (e.position) points.push(e.position.getValue(now));
      if (e.polyline) points.push(...e.polyline.positions.getValue(now));
    }
    if (!points.length) return Promise.resolve();
    const sphere = Cesium.BoundingSphere.fromPoints(points);
    return new Promise((resolve) => state.viewer.camera.flyToBoundingSphere(sphere, {
      duration: 1.2, complete: resolve, cancel: resolve,
      offset: new Cesium.HeadingPitchRange(0, Cesium.Math.toRadians(-50), Math.max(150, sphere.radius * 2.4)),
    }));
  }

  // --- the panel ----------------------------------------------------------------------------

  function el(tag, attrs = {}, ...children) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs)) {
      if (k === "style") e.style.cssText = v; else if (k in e) e[k] = v; else e.setAttribute(k, v);
    }
    e.append(...children);
    return e;
  }

  function heading(text) {
    return el("div", { className: "result-title", style: "font-weight:bold;margin-top:4px" }, text);
  }

  function table(rows) {
    const t = el("table", { className: "result-table" });
    for (const [k, v] of rows) {
      const tr = t.insertRow();
      tr.insertCell().textContent = k;
      tr.insertCell().textContent = v === null || v === undefined ? "" : String(v);
    }
    return t;
  }

  function list(className, items, text, dataKey) {
    const ul = el("ul", { className, style: "margin:2px 0;padding-left:16px;max-height:9em;overflow:auto" });
    for (const it of items) {
      const li = el("li", {}, text(it));
      if (dataKey) li.dataset.id = String(it[dataKey]);
      ul.append(li);
    }
    return ul;
  }

  function show(...nodes) {
    els.result.textContent = "";
    els.result.append(...nodes);
  }

  function problem(e) {
    show(el("div", { className: "result-error", style: "color:#b00" }, String((e && e.message) || e)));
  }

  function status(text) {
    show(el("div", { className: "result-status", style: "color:#555" }, text));
  }

  const fixed = (v, n = 1) => (v === null || v === undefined ? "" : Number(v).toFixed(n));

  // --- a picked pipe --------------------------------------------------------------------------

  function onPick(result) {
    if (!result) return;
    const p = result.properties || {};
    const rec = result.record || {};
    if (result.tileset === "pipelines" || result.collection === "pipelines") {
      const network = rec.network || p.network || null;
      const size = rec.diameter_mm || p.diameter_mm ? `DN${rec.diameter_mm || p.diameter_mm}`
        : rec.width_mm || p.width_mm ? `${rec.width_mm || p.width_mm}×${rec.height_mm || p.height_mm}` : "";
      selected = { id: Number(p.id), network, label: `#${p.id} ${network || ""} ${size}`.trim() };
      els.pipe.textContent = `管线 pipe ${selected.label}`;
      for (const b of els.pipeButtons) b.disabled = false;
    }
    if (result.collection === "grids" || result.theme === "grids") {
      const code = rec.code || p.code;
      if (code && /^[0-9]{14,15}$/.test(String(code))) showGridSummary(String(code)).catch(problem);
    }
  }

  async function runIsolation(segmentId, { fly = true } = {}) {
    clearDrawing();
    status("valve isolation…");
    const answer = await call("POST", "pipelines/isolation", { segment_id: Number(segmentId) });
    typical(answer.features.features.flatMap((f) => lines(f.geometry).flat()));
    const valves = [];
    for (const v of answer.valves) {
      if (v.point && addPoint("valve", v.valve, v.point[0], v.point[1], v.point[2], COLOURS.valve, v.valve_no || v.valve, 14)) {
        valves.push(v.valve);
      }
    }
    const segments = [];
    for (const f of answer.features.features) {
      const p = f.properties;
      if (p.kind !== "segment") continue;
      for (const c of lines(f.geometry)) addLine("isolated", p.segment_id, c, p.segment_id === Number(segmentId) ? COLOURS.valve : COLOURS.isolated, 6);
      segments.push(p.segment_id);
    }
    const buildings = answer.customers.items.map((b) => b.building_id);
    for (const b of answer.customers.items) {
      const [lon, lat] = b.point.coordinates;
      addPoint("building", b.building_id, lon, lat, null, COLOURS.building, null, 8);
    }
    mark("pipelines", answer.isolated_segments.ids, COLOURS.isolated);
    mark("pipeline_points", answer.valves.map((v) => v.node_id).filter((id) => id !== null && id !== undefined), COLOURS.valve);
    mark("buildings", buildings, COLOURS.building);
    const outlined = await outlineBuildings(answer.customers.items.map((b) => b.building_code));
    show(
      heading(`阀门隔离 valve isolation of pipe #${segmentId} (${answer.network})`),
      table([
        ["valves to close", answer.valves.filter((v) => v.action === "close").length],
        ["isolated pipes", `${answer.isolated_segments.count} (${fixed(answer.isolated_segments.length_m)} m)`],
        ["affected buildings", answer.customers.buildings],
        ["residents", answer.customers.residents],
      ]),
      heading("valves 关闭阀门"),
      list("valve-list", answer.valves, (v) => `${v.valve_no || v.valve} (${v.valve}) ${v.action}`, "valve"),
      heading("buildings 受影响建筑"),
      list("building-list", answer.customers.items, (b) => `${b.building_code} ${b.name || ""}`, "building_id"),
    );
    if (fly) await flyToDrawn();
    return {
      answer, valves, segments, buildings, outlined,
      valveFeatures: markedNow("pipeline_points", COLOURS.valve),
      pipeFeatures: markedNow("pipelines", COLOURS.isolated),
      buildingFeatures: markedNow("buildings", COLOURS.building),
    };
  }

  async function runTrace(segmentId, direction = "downstream", network = null, { fly = true } = {}) {
    clearDrawing();
    status(`${direction} trace…`);
    let net = network || (selected && selected.id === Number(segmentId) ? selected.network : null);
    if (!net) net = (await call("GET", `collections/pipelines/items/${Number(segmentId)}`)).properties.network;
    const answer = await call("POST", "pipelines/trace", {
      network: net, start: { segment_id: Number(segmentId) }, direction, max_features: 2000,
    });
    const segments = [];
    for (const f of answer.features) {
      const p = f.properties;
      if (p.kind !== "segment") continue;
      for (const c of lines(f.geometry)) addLine("trace", p.segment_id, c, p.segment_id === Number(segmentId) ? COLOURS.valve : COLOURS.trace, 5);
      segments.push(p.segment_id);
    }
    mark("pipelines", answer.segment_ids, COLOURS.trace);
    show(
      heading(`追踪 ${direction} trace from pipe #${segmentId} (${answer.network})`),
      table([
        ["direction applied", answer.direction_applied],
        ["pipes", answer.totals.segments],
        ["points", answer.totals.nodes],
        ["length", `${fixed(answer.totals.length_m)} m`],
        ["stops", (answer.stops || []).length],
      ]),
      el("div", { className: "result-notes", style: "color:#555;font-size:11px" }, (answer.notes || []).join(" ")),
    );
    if (fly) await flyToDrawn();
    return { answer, segments, pipeFeatures: markedNow("pipelines", COLOURS.trace) };
  }

  // --- cross-section -------------------------------------------------------------------------

  function networkColour(network) {
    return pipesTheme ? window.cimtwinLegend.colorOf(pipesTheme, { network }) : "#888";
  }

  // The section chart: distance along the line (x), elevation (y), the ground, one mark per
  // crossed pipe: a circle for a round pipe, a box for a rectangular one, drawn to the
  // vertical scale so its size is its diameter (at least 3 px to stay visible).
  function sectionChart(answer) {
    const W = 480, H = 240, L = 44, R = 10, T = 22, B = 30;
    const NS = "http://www.w3.org/2000/svg";
    const svg = document.createElementNS(NS, "svg");
    // scaled to the box's width (no scroll bars beside the 3D view)
    svg.setAttribute("viewBox", `0 0 ${W} ${H}`);
    svg.style.cssText = "width:100%;height:auto;display:block";
    svg.id = "section-chart";
    const add = (tag, attrs, text) => {
      const e = document.createElementNS(NS, tag);
      for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
      if (text !== undefined) e.textContent = text;
      svg.append(e);
      return e;
    };
    const ground = answer.ground.samples.filter((s) => Number.isFinite(s.elevation_m));
    const zs = [...ground.map((s) => s.elevation_m),
      ...answer.pipes.flatMap((p) => [p.top_elevation_m, p.bottom_elevation_m, p.ground_elevation_m])]
      .filter(Number.isFinite);
    const zmax = Math.max(...zs) + 0.5, zmin = Math.min(...zs) - 0.5;
    const len = answer.length_m;
    const x = (d) => L + (d / len) * (W - L - R);
    const y = (z) => T + ((zmax - z) / (zmax - zmin)) * (H - T - B);
    const pxPerM = (H - T - B) / (zmax - zmin);
    add("rect", { x: L, y: T, width: W - L - R, height: H - T - B, fill: "#f7f7f7", stroke: "#999" });
    // ground: the soil below the line shaded
    if (ground.length > 1) {
      const line = ground.map((s) => `${x(s.offset_m).toFixed(1)},${y(s.elevation_m).toFixed(1)}`);
      add("polygon", { points: [`${x(ground[0].offset_m)},${y(zmin)}`, ...line, `${x(ground[ground.length - 1].offset_m)},${y(zmin)}`].join(" "), fill: "#e8dcc4", class: "ground-fill" });
      add("polyline", { points: line.join(" "), fill: "none", stroke: "#7a5a2a", "stroke-width": 2, class: "ground-line" });
    }
    // axes: elevation ticks (m), distance ticks (m)
    const step = (span, n) => { const raw = span / n, p = 10 ** Math.floor(Math.log10(raw)); return [1, 2, 5, 10].map((k) => k * p).find((s) => s >= raw); };
    const zs1 = step(zmax - zmin, 5);
    for (let z = Math.ceil(zmin / zs1) * zs1; z <= zmax; z += zs1) {
      add("line", { x1: L - 4, x2: W - R, y1: y(z), y2: y(z), stroke: "#ddd" });
      add("text", { x: L - 6, y: y(z) + 4, "text-anchor": "end", "font-size": 10 }, z.toFixed(zs1 < 1 ? 1 : 0));
    }
    const ds = step(len, 6);
    for (let d = 0; d <= len + 1e-6; d += ds) {
      add("line", { x1: x(d), x2: x(d), y1: H - B, y2: H - B + 4, stroke: "#666" });
      add("text", { x: x(d), y: H - B + 15, "text-anchor": "middle", "font-size": 10 }, d.toFixed(0));
    }
    add("text", { x: W - R, y: H - 3, "text-anchor": "end", "font-size": 10 }, "distance along the section (m) 距离");
    add("text", { x: 4, y: 12, "font-size": 10 }, "elevation 高程 (m)");
    add("text", { x: W - R, y: 12, "text-anchor": "end", "font-size": 11, "font-weight": "bold" },
      `横断面 cross-section ${len.toFixed(0)} m, ${answer.pipes.length} pipes`);
    for (const p of answer.pipes) {
      const colour = networkColour(p.network);
      const cx = x(p.offset_m), cy = y(p.centre_elevation_m);
      const tip = `#${p.segment_id} ${p.network} ${p.size || ""} depth ${fixed(p.depth_m, 2)} m, centre ${fixed(p.centre_elevation_m, 2)} m`;
      let mark;
      if (p.shape === "rectangular" || (!p.diameter_mm && p.width_mm)) {
        const h = Math.max(3, ((p.height_mm || 0) / 1000) * pxPerM);
        const w = Math.max(3, ((p.width_mm || 0) / 1000) * pxPerM);
        mark = add("rect", { x: cx - w / 2, y: cy - h / 2, width: w, height: h });
      } else {
        mark = add("circle", { cx, cy, r: Math.max(3, ((p.diameter_mm || 0) / 2000) * pxPerM) });
      }
      for (const [k, v] of Object.entries({ fill: colour, stroke: "#000", "stroke-width": 1, class: "pipe-mark", "data-segment-id": p.segment_id, "data-network": p.network })) mark.setAttribute(k, v);
      const title = document.createElementNS(NS, "title");
      title.textContent = tip;
      mark.append(title);
    }
    // a key of the networks crossed
    const nets = [...new Set(answer.pipes.map((p) => p.network))];
    nets.forEach((n, i) => {
      add("rect", { x: L + 6 + i * 46, y: T + 4, width: 10, height: 10, fill: networkColour(n), stroke: "#000" });
      add("text", { x: L + 19 + i * 46, y: T + 13, "font-size": 10 }, n);
    });
    return svg;
  }

  async function runCrossSection(a, b, { fly = false } = {}) {
    clearDrawing();
    status("cross-section…");
    const answer = await call("POST", "pipelines/cross-section", { line: [a.slice(0, 2), b.slice(0, 2)] });
    // the section line, draped on the ground
    const pos = (t) => [a[0] + (b[0] - a[0]) * t, a[1] + (b[1] - a[1]) * t];
    addLine("section", "line", [pos(0), pos(1)], COLOURS.section, 4);
    const ids = answer.pipes.map((p) => p.segment_id);
    for (const p of answer.pipes) {
      if (p.point) addPoint("crossing", p.segment_id, p.point[0], p.point[1], p.centre_elevation_m, networkColour(p.network), null, 9);
    }
    mark("pipelines", ids, COLOURS.section);
    const chart = document.getElementById("chart");
    chart.textContent = "";
    chart.append(sectionChart(answer));
    show(
      heading(`横断面 cross-section, ${fixed(answer.length_m, 0)} m`),
      table([["pipes crossed", answer.pipes.length]]),
      list("crossing-list", answer.pipes, (p) => `#${p.segment_id} ${p.network} ${p.size || ""} at ${fixed(p.offset_m)} m, depth ${fixed(p.depth_m, 2)} m`, "segment_id"),
    );
    if (fly) await flyToDrawn();
    return { answer, marks: [...chart.querySelectorAll(".pipe-mark")].map((m) => Number(m.dataset.segmentId)) };
  }

  // --- excavation check -----------------------------------------------------------------------

  async function runExcavation(ring, depth, { fly = false } = {}) {
    clearDrawing();
    status("excavation check…");
    const closed = ring.map((p) => p.slice(0, 2));
    const [f, l] = [closed[0], closed[closed.length - 1]];
    if (f[0] !== l[0] || f[1] !== l[1]) closed.push(f.slice());
    const answer = await call("POST", "pipelines/excavation-check", {
      polygon: { type: "Polygon", coordinates: [closed] }, depth: Number(depth),
    });
    source.entities.add({
      polygon: {
        hierarchy: Cesium.Cartesian3.fromDegreesArray(closed.flat()), material: css(COLOURS.excavation, 0.25),
        classificationType: Cesium.ClassificationType.BOTH,
      },
      properties: { kind: "excavation", id: "polygon" },
    });
    addLine("excavation", "outline", closed, COLOURS.excavation, 3);
    const pipes = answer.pipes.map((p) => p.segment_id);
    for (const p of answer.pipes) for (const c of lines(p.geometry)) addLine("hit", p.segment_id, c, COLOURS.excavation, 7);
    const nodes = answer.nodes.map((n) => n.node_id);
    for (const n of answer.nodes) if (n.point) addPoint("hit-node", n.node_id, n.point[0], n.point[1], n.point[2], COLOURS.excavation, null, 9);
    mark("pipelines", pipes, COLOURS.excavation);
    mark("pipeline_points", nodes, COLOURS.excavation);
    show(
      heading(`开挖检查 excavation check, depth ${fixed(answer.depth_m)} m`),
      table([["pipes hit", answer.pipes.length], ["points hit", answer.nodes.length],
        ...Object.entries(answer.summary).map(([n, s]) => [n, `${s.pipes} pipes, ${s.nodes} points`])]),
      heading("pipes 管线 (riskiest first)"),
      list("hit-list", answer.pipes, (p) => `#${p.segment_id} ${p.network} ${p.size || ""} top ${fixed(p.top_depth_m, 2)} m ${p.owner || ""}`, "segment_id"),
      heading("points 管线点"),
      list("hit-node-list", answer.nodes, (n) => `${n.point_no} ${n.network} ${n.appurtenance || n.feature || ""}`, "node_id"),
    );
    if (fly) await flyToDrawn();
    return { answer, pipes, nodes, listed: [...els.result.querySelectorAll(".hit-list li")].map((li) => Number(li.dataset.id)) };
  }

  // --- incidents ------------------------------------------------------------------------------

  async function placeIncident({ lon, lat, type, severity, title, key }, { fly = false } = {}) {
    clearDrawing();
    status("placing the incident…");
    const editorKey = key || sessionStorage.getItem(KEY_STORE) || "";
    if (!editorKey) throw new Error("an editor key is needed to place an incident");
    const created = await call("POST", "incidents", {
      incident_type: type, severity: Number(severity), title,
      geometry: { type: "Point", coordinates: [lon, lat] },
    }, { "X-API-Key": editorKey });
    const ctx = await call("GET", `incidents/${created.id}/context`);
    addPoint("incident", created.id, lon, lat, null, COLOURS.incident, `${type} #${created.id}`, 18);
    typical(ctx.hydrants.items.map((h) => h.geometry.coordinates));
    const hydrants = ctx.hydrants.items.map((h) => h.id);
    for (const h of ctx.hydrants.items) {
      const [hl, ha, hz] = h.geometry.coordinates;
      addPoint("hydrant", h.id, hl, ha, hz, COLOURS.hydrant, h.point_no, 11);
    }
    const valves = ((ctx.isolation && ctx.isolation.valves) || []);
    for (const v of valves) if (v.point) addPoint("valve", v.valve || v.id, v.point[0], v.point[1], v.point[2], COLOURS.valve, v.valve_no || null, 12);
    mark("pipelines", ctx.gas_pipes.items.map((p) => p.id), COLOURS.gas);
    mark("pipelines", ctx.power_cables.items.map((p) => p.id), COLOURS.power);
    mark("buildings", ctx.buildings.items.map((b) => b.id), COLOURS.building);
    mark("pipeline_points", hydrants, COLOURS.hydrant);
    const g = ctx.grid || {};
    show(
      heading(`事件 incident #${created.id}: ${title}`),
      table([
        ["grid 网格", g.code ? `${g.name} (${g.code})` : "outside every grid"],
        ["officer", g.officer],
        ["community", g.community && g.community.name],
        ["hydrants", `${ctx.hydrants.items.length} nearest (${ctx.hydrants.method})`],
        ["valves to close", ctx.isolation ? ctx.isolation.valves_to_close ?? valves.length : "—"],
        ["gas pipes 燃气", `${ctx.gas_pipes.count}${ctx.gas_pipes.count ? `, nearest ${fixed(ctx.gas_pipes.nearest_m)} m` : ""}`],
        ["power cables 电力", `${ctx.power_cables.count}${ctx.power_cables.count ? `, nearest ${fixed(ctx.power_cables.nearest_m)} m` : ""}`],
        ["buildings", `${ctx.buildings.count} (${ctx.buildings.residents || 0} residents)`],
      ]),
      heading("hydrants 消防栓"),
      list("hydrant-list", ctx.hydrants.items, (h) => `${h.point_no} ${fixed(h.distance_m)} m`, "id"),
    );
    if (fly) await flyToDrawn();
    return { incident: created, context: ctx, hydrants };
  }

  // --- grids ----------------------------------------------------------------------------------

  async function showGridSummary(code) {
    const s = await call("GET", `grids/${encodeURIComponent(code)}`);
    clearDrawing();
    try {
      const item = await call("GET", `collections/grids/items/${encodeURIComponent(code)}`);
      const polys = item.geometry.type === "Polygon" ? [item.geometry.coordinates] : item.geometry.coordinates;
      for (const poly of polys) addLine("grid", code, poly[0].map((c) => c.slice(0, 2)), COLOURS.grid, 4);
    } catch (e) { /* the summary stands without its outline */ }
    const by = (items, name) => items.map((i) => `${i[name] || i.code || i.network}: ${i.count ?? i.segments}`).join(", ");
    show(
      heading(`网格 ${s.grid.name} (${s.grid.code})`),
      table([
        ["street / community", `${s.street.name} / ${s.community.name}`],
        ["officer 网格员", s.grid.officer],
        ["area", `${fixed(s.grid.area_m2 / 10000, 2)} ha`],
        ["buildings", `${s.buildings.count} (${fixed(s.buildings.floor_area_m2, 0)} m² floor area)`],
        ["residents", s.residents],
        ["components 部件", s.components.count],
        ["pipes 管线", `${fixed(s.pipelines.length_m, 0)} m: ${s.pipelines.by_network.map((n) => `${n.network} ${fixed(n.length_m, 0)} m`).join(", ")}`],
        ["parcels 地块", `${s.parcels.count}: ${by(s.parcels.by_land_use, "code")}`],
        ["open incidents", s.open_incidents.count],
      ]),
    );
    els.result.dataset.grid = s.grid.code;
    return s;
  }

  async function gridAt(lon, lat) {
    const url = state.api("grids/locate");
    url.searchParams.set("lon", String(lon));
    url.searchParams.set("lat", String(lat));
    const found = await call("GET", url);
    return showGridSummary(found.grid.code);
  }

  // --- map clicks for the tools -----------------------------------------------------------------

  let tool = null;  // {name, points, ...}

  function cancelTool() {
    tool = null;
    state.clickHandler = null;
    for (const b of els.toolButtons || []) b.classList.remove("active");
  }

  function lonlat(ground) {
    return ground ? [Cesium.Math.toDegrees(ground.longitude), Cesium.Math.toDegrees(ground.latitude)] : null;
  }

  function startTool(name, button, onClick, hint) {
    clearAnalysis();
    tool = { name, points: [] };
    button.classList.add("active");
    status(hint);
    state.clickHandler = ({ ground }) => {
      const p = lonlat(ground);
      if (!p || !tool) return null;
      return onClick(p);
    };
  }

  function vertex(p) {
    addPoint("vertex", tool.points.length, p[0], p[1], null, COLOURS.vertex, null, 8);
    tool.points.push(p);
    if (tool.points.length > 1) addLine("draft", tool.points.length, tool.points.slice(-2), COLOURS.vertex, 2);
  }

  const done = (promise) => promise.catch(problem).finally(cancelTool);

  function finishPolygon() {
    if (!tool || tool.name !== "excavation") return;
    // a double click also clicked twice: drop a repeated last vertex
    const pts = tool.points.filter((p, i, a) => i === 0 || p[0] !== a[i - 1][0] || p[1] !== a[i - 1][1]);
    if (pts.length < 3) { status("click at least three corners, then finish"); return; }
    return done(runExcavation(pts, Number(els.depth.value), { fly: false }));
  }

  // --- init -----------------------------------------------------------------------------------

  function button(text, onClick, cls) {
    const b = el("button", { type: "button", className: cls || "" }, text);
    b.addEventListener("click", () => { Promise.resolve(onClick(b)).catch(problem); });
    return b;
  }

  async function init(s) {
    source = new Cesium.CustomDataSource("analyses");
    await s.viewer.dataSources.add(source);
    // Cesium's double click tracks an entity: here it finishes a polygon instead
    s.viewer.cesiumWidget.screenSpaceEventHandler.removeInputAction(Cesium.ScreenSpaceEventType.LEFT_DOUBLE_CLICK);
    new Cesium.ScreenSpaceEventHandler(s.viewer.scene.canvas).setInputAction(
      () => { finishPolygon(); }, Cesium.ScreenSpaceEventType.LEFT_DOUBLE_CLICK);
    // tiles that load later take the marks once their features exist (a glTF tile's features
    // come some frames after tileLoad, as its model gets ready): after each frame, every loaded
    // tile of a marked tileset not painted twice yet is painted (twice: a colour set the frame
    // the features came can be lost as the tile's batch table starts)
    s.viewer.scene.postRender.addEventListener(() => {
      let changed = false;
      for (const layer of s.layers) {
        if (!marks.has(layer.id)) continue;
        const walk = (tile) => {
          const content = tile.contentReady ? tile.content : null;
          if (content && content.featuresLength) {
            const times = painted.get(content) || 0;
            if (times < 2) {
              painted.set(content, times + 1);
              featuresOf(content, (f) => paint(layer.id, f));
              changed = true;
            }
          }
          for (const child of tile.children) walk(child);
        };
        walk(layer.tileset.root);
      }
      if (changed) s.viewer.scene.requestRender();  // also when the scene renders on request
    });
    s.onPick.push(onPick);
    const box = document.getElementById("tools");
    box.textContent = "";
    const style = el("style", {}, `#tools button { font-size:12px; margin:1px; }
      #tools button.active { background:#ffd400; } #tools .row { margin:3px 0; }
      #tools input, #tools select { font-size:12px; } #tools .result-table td { padding:0 4px; border-bottom:1px solid #eee; }
      #tools { width: 370px; max-height: calc(100% - 60px); overflow: visible; }
      #tool-result { max-height: calc(100vh - 330px); overflow: auto; }
      #chart { overflow: visible; max-height: none; }`);
    els.pipe = el("div", { id: "tool-pipe", style: "color:#555" }, "click a pipe to isolate or trace it 点击管线");
    const isolation = button("valve isolation 阀门隔离", () => selected && runIsolation(selected.id).catch(problem), "run-isolation");
    const direction = el("select", { id: "trace-direction" },
      ...["downstream", "upstream", "connected"].map((d) => el("option", { value: d }, d)));
    const trace = button("trace 追踪", () => selected && runTrace(selected.id, direction.value).catch(problem), "run-trace");
    els.pipeButtons = [isolation, trace];
    for (const b of els.pipeButtons) b.disabled = true;
    const section = button("cross-section 横断面", (b) => startTool("section", b, (p) => {
      vertex(p);
      if (tool.points.length === 2) return done(runCrossSection(tool.points[0], tool.points[1]));
      status("click the section's second point");
      return null;
    }, "click the section's first point"), "tool-section");
    els.depth = el("input", { type: "number", id: "excavation-depth", min: "0.1", max: "50", step: "0.5", value: "3", style: "width:4em" });
    const excavation = button("excavation 开挖", (b) => startTool("excavation", b, (p) => {
      vertex(p);
      status(`${tool.points.length} corners: double-click or “finish” to check`);
      return null;
    }, "click the excavation's corners, then double-click or “finish”"), "tool-excavation");
    const finish = button("finish", () => finishPolygon(), "tool-finish");
    els.key = el("input", { type: "password", id: "editor-key", placeholder: "editor key", style: "width:8em", autocomplete: "off" });
    els.key.value = sessionStorage.getItem(KEY_STORE) || "";
    els.key.addEventListener("change", () => sessionStorage.setItem(KEY_STORE, els.key.value.trim()));
    els.type = el("select", { id: "incident-type" }, ...["pipe_burst", "gas_leak", "fire", "waterlogging", "road_collapse", "manhole_cover_missing"]
      .map((t) => el("option", { value: t }, t)));
    els.severity = el("select", { id: "incident-severity" }, ...[1, 2, 3, 4].map((v) => el("option", { value: String(v), selected: v === 3 }, `severity ${v}`)));
    els.title = el("input", { type: "text", id: "incident-title", placeholder: "title 标题", maxLength: 200, style: "width:10em" });
    const place = button("place incident 上报事件", (b) => {
      sessionStorage.setItem(KEY_STORE, els.key.value.trim());
      startTool("incident", b, ([lon, lat]) => done(placeIncident({
        lon, lat, type: els.type.value, severity: els.severity.value,
        title: els.title.value.trim() || els.type.value, key: els.key.value.trim(),
      })), "click where the incident is");
    }, "tool-incident");
    const locate = button("grid at this point 网格", (b) => startTool("grid", b, ([lon, lat]) => done(gridAt(lon, lat)), "click in a work grid"), "tool-grid");
    const clear = button("clear 清除", () => clearAnalysis(), "tool-clear");
    els.toolButtons = [section, excavation, place, locate];
    els.result = el("div", { id: "tool-result" });
    box.append(style, el("h3", {}, "分析 Analyses"), els.pipe,
      el("div", { className: "row" }, isolation, trace, direction),
      el("div", { className: "row" }, section, excavation, els.depth, "m ", finish),
      el("div", { className: "row" }, els.key, els.type, els.severity),
      el("div", { className: "row" }, els.title, place),
      el("div", { className: "row" }, locate, clear),
      els.result);
    try {
      pipesTheme = (await window.cimtwinLegend.load(state.api("legends"), state.headers)).find((t) => t.id === "pipelines") || null;
    } catch (e) { pipesTheme = null; /* grey marks: the chart still reads */ }
  }

  Object.assign(state, {
    runIsolation, runTrace, runCrossSection, runExcavation, placeIncident, showGridSummary, gridAt,
    clearAnalysis,
    analysisMarks: (kind) => (source ? source.entities.values : [])
      .filter((e) => e.properties && e.properties.kind.getValue() === kind)
      .map((e) => e.properties.id.getValue()),
    markedFeatures: markedNow,
    markableFeatures: markable,
  });
  state.plugins.push({ name: "analyses", init });
})();
