// The search box (#search): building code or address, grid code or name, parcel code, pipe
// point number, answered by GET /search as the user types (debounced). Choosing a result flies
// the camera there, from a height that suits the kind, and opens its attributes; a building is
// also highlighted in the 3D buildings tileset once its tile has loaded.
//   cimtwinViewer.search(text) -> Promise<results>
//   cimtwinViewer.goTo(result, {duration}) -> Promise<the attribute panel's result> (after the flight)
(() => {
  const state = window.cimtwinViewer;
  // viewing distance (m) per kind: a pipe point up close, a grid as a whole
  const RANGE = { building: 320, grid: 900, parcel: 650, pipeline_point: 140 };
  const TITLE = { building: "建筑 building", grid: "网格 grid", parcel: "地块 parcel", pipeline_point: "管线点 pipe point" };
  const DEBOUNCE_MS = 250;
  let input, list, timer = null, asked = 0;

  async function search(text) {
    const url = state.api("search");
    url.searchParams.set("q", text);
    url.searchParams.set("limit", "10");
    const answer = await fetch(url, { headers: state.headers });
    if (!answer.ok) throw new Error(`GET /search: HTTP ${answer.status}`);
    return (await answer.json()).results;
  }

  function render(results, text) {
    list.textContent = "";
    if (!results.length) {
      const none = document.createElement("div");
      none.className = "search-none";
      none.textContent = `nothing found for “${text}”`;
      list.append(none);
      return;
    }
    for (const r of results) {
      const item = document.createElement("button");
      item.type = "button";
      item.className = "search-result";
      item.dataset.kind = r.kind;
      item.dataset.id = String(r.id);
      item.title = TITLE[r.kind] || r.kind;
      item.textContent = r.label;
      item.addEventListener("click", () => { goTo(r).catch((e) => showProblem(e)); });
      list.append(item);
    }
  }

  function showProblem(e) {
    list.textContent = String((e && e.message) || e);
  }

  // Typing: ask after a pause; an older answer arriving late does not replace a newer one.
  function onInput() {
    clearTimeout(timer);
    const text = input.value.trim();
    if (!text) { list.textContent = ""; return; }
    timer = setTimeout(async () => {
      const mine = ++asked;
      try {
        const results = await search(text.slice(0, 100));
        if (mine === asked) render(results, text);
      } catch (e) {
        if (mine === asked) showProblem(e);
      }
    }, DEBOUNCE_MS);
  }

  // Ground height under a position from the loaded tilesets (terrain, buildings), else 0.
  function heightAt(lon, lat) {
    const scene = state.viewer.scene;
    const carto = Cesium.Cartographic.fromDegrees(lon, lat);
    const h = scene.sampleHeightSupported ? scene.sampleHeight(carto) : undefined;
    return Number.isFinite(h) ? h : 0;
  }

  function fly(result, duration) {
    const [lon, lat] = result.position;
    let range = RANGE[result.kind] || 400;
    if (result.bbox) {
      // far enough back to see the whole polygon
      const [w, s, e, n] = result.bbox;
      const diag = Cesium.Cartesian3.distance(
        Cesium.Cartesian3.fromDegrees(w, s), Cesium.Cartesian3.fromDegrees(e, n));
      range = Math.max(range, diag * 1.6);
    }
    const centre = Cesium.Cartesian3.fromDegrees(lon, lat, heightAt(lon, lat));
    return new Promise((resolve) => {
      state.viewer.camera.flyToBoundingSphere(new Cesium.BoundingSphere(centre, 1), {
        offset: new Cesium.HeadingPitchRange(0, Cesium.Math.toRadians(-45), range),
        duration, complete: resolve, cancel: resolve,
      });
    });
  }

  // Wait (a few frames at most) for the building's tile, then highlight it like a click does.
  async function highlightBuilding(id) {
    for (let i = 0; i < 40; i++) {
      if (state.featureIds("buildings").includes(id)) return state.pickFeatureById("buildings", id);
      await new Promise((r) => setTimeout(r, 100));
    }
    return null;
  }

  async function goTo(result, { duration = 1.5 } = {}) {
    list.querySelectorAll(".search-result").forEach((b) => b.classList.toggle(
      "chosen", b.dataset.kind === result.kind && b.dataset.id === String(result.id)));
    await fly(result, duration);
    if (result.kind === "building") {
      const picked = await highlightBuilding(result.id);
      if (picked) return picked;
    }
    return state.showAttributes(`${TITLE[result.kind] || result.kind}: ${result.label}`,
      { id: result.id, kind: result.kind }, result.collection, { search: true });
  }

  function init() {
    const box = document.getElementById("search");
    box.textContent = "";
    input = document.createElement("input");
    input.type = "search";
    input.id = "search-input";
    input.placeholder = "搜索 building code / address, grid, parcel, pipe point";
    input.maxLength = 100;
    input.style.cssText = "width:100%;box-sizing:border-box";
    input.addEventListener("input", onInput);
    input.addEventListener("keydown", (e) => {
      if (e.key !== "Enter") return;
      const first = list.querySelector(".search-result");
      if (first) first.click();
    });
    list = document.createElement("div");
    list.id = "search-results";
    const style = document.createElement("style");
    style.textContent = `.search-result { display:block; width:100%; text-align:left; border:0;
      background:none; padding:2px 0; font:12px sans-serif; cursor:pointer; }
      .search-result:hover, .search-result.chosen { background:#e6f2ff; }
      .search-none { color:#666; font-size:12px; }`;
    box.append(style, input, list);
    return Promise.resolve();
  }

  state.search = search;
  state.goTo = goTo;
  state.plugins.push({ name: "search", init });
})();
