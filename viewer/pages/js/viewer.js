// The twin viewer's core: every tileset GET /3dtiles lists, a layer panel (visibility,
// opacity), an underground control, picking (tile metadata, then the OGC API Features record)
// and a URL hash #lon,lat,height,heading,pitch. body.dataset.ready = "true" once every
// tileset's initial tiles and every plugin's initial load are done ("error" and
// dataset.error when one fails).
//
// Plugins (the other scripts under js/) register before the page starts:
//   cimtwinViewer.plugins.push({ name, init(state) -> Promise, pickAt(x, y) -> Promise<result|null> })
// init runs once the viewer exists; the ready flag waits for its promise. pickAt is asked, in
// order, when a click hits no 3D feature (draped themes). state.clickHandler, when set, takes
// the next clicks instead of picking (drawing a line or polygon, placing an incident);
// state.onPick listeners hear every pick result, state.onClear every cleared highlight.
const params = new URLSearchParams(location.search);
const headers = params.get("key") ? { "X-API-Key": params.get("key") } : {};
// south of the North Station (22.6119 N), looking north at it from about 1.3 km away
const DEFAULT_VIEW = [114.0239, 22.6000, 1400, 0, -45];
const api = (path) => new URL("../" + path.replace(/^\//, ""), location.href);
const state = {
  viewer: null, layers: [], picked: null, pickedColor: null, started: performance.now(),
  plugins: [], onPick: [], onClear: [], clickHandler: null, params, headers, api,
};
window.cimtwinViewer = state;

function setError(message) {
  if (document.body.dataset.ready === "error") return;
  document.body.dataset.ready = "error";
  document.body.dataset.error = String(message && message.message || message);
}

function readHash() {
  const parts = location.hash.replace(/^#/, "").split(",").map(Number);
  if (parts.length < 3 || parts.some((v) => !Number.isFinite(v))) return DEFAULT_VIEW;
  return [...parts, ...DEFAULT_VIEW.slice(parts.length)].slice(0, 5);
}

function writeHash() {
  const c = state.viewer.camera;
  const carto = c.positionCartographic;
  const deg = Cesium.Math.toDegrees;
  const hash = "#" + [deg(carto.longitude).toFixed(6), deg(carto.latitude).toFixed(6),
    carto.height.toFixed(1), deg(c.heading).toFixed(1), deg(c.pitch).toFixed(1)].join(",");
  if (hash !== location.hash) history.replaceState(null, "", hash);
}

function flyToHash() {
  const [lon, lat, height, heading, pitch] = readHash();
  state.viewer.camera.setView({
    destination: Cesium.Cartesian3.fromDegrees(lon, lat, height),
    orientation: { heading: Cesium.Math.toRadians(heading), pitch: Cesium.Math.toRadians(pitch), roll: 0 },
  });
}

function layerPanel() {
  const list = document.getElementById("layer-list");
  list.textContent = "";
  if (!state.layers.length) list.textContent = "no 3D tileset built";
  for (const layer of state.layers) {
    const row = document.createElement("label");
    row.dataset.tileset = layer.id;
    const shown = document.createElement("input");
    shown.type = "checkbox"; shown.checked = true; shown.className = "visible";
    shown.addEventListener("change", () => { layer.tileset.show = shown.checked; });
    const opacity = document.createElement("input");
    opacity.type = "range"; opacity.min = "0"; opacity.max = "1"; opacity.step = "0.05";
    opacity.value = "1"; opacity.className = "opacity";
    opacity.addEventListener("input", () => setOpacity(layer, Number(opacity.value)));
    row.append(shown, " ", layer.title, " ", opacity);
    list.append(row);
  }
}

function setOpacity(layer, alpha) {
  layer.opacity = alpha;
  layer.tileset.style = alpha >= 1 ? undefined
    : new Cesium.Cesium3DTileStyle({ color: `color('white', ${alpha})` });
  // the style recolours every feature on the next frame: then the pick gets its colour back
  const off = state.viewer.scene.postRender.addEventListener(() => {
    off();
    const f = state.picked;
    if (f && f.tileset === layer.tileset) {
      state.pickedColor = Cesium.Color.clone(f.color);
      f.color = Cesium.Color.CYAN.withAlpha(alpha);
    }
  });
}

function setUnderground(on) {
  const scene = state.viewer.scene;
  scene.globe.translucency.enabled = on;
  scene.globe.translucency.frontFaceAlpha = 0.3;
  scene.globe.translucency.backFaceAlpha = 0.3;
  scene.screenSpaceCameraController.enableCollisionDetection = !on;
  document.getElementById("underground").checked = on;
  // the terrain tileset (a mesh over the globe) goes translucent with the ground
  for (const layer of state.layers.filter((l) => l.id === "terrain")) {
    if (on) layer.opacityAbove = layer.opacity;
    const alpha = on ? Math.min(layer.opacity, 0.3) : (layer.opacityAbove ?? 1);
    setOpacity(layer, alpha);
    const slider = document.querySelector(`label[data-tileset="${layer.id}"] input.opacity`);
    if (slider) slider.value = String(alpha);
  }
}

function row(table, key, value) {
  const tr = table.insertRow();
  tr.insertCell().textContent = key;
  tr.insertCell().textContent = value === undefined || value === null ? "" : String(value);
}

function clearPick() {
  // restore the previous pick's colour; plugins clear their own highlights
  if (state.picked) {
    try { state.picked.color = state.pickedColor; } catch (e) { /* its tile was unloaded */ }
  }
  state.picked = null;
  for (const listener of state.onClear) listener();
  document.getElementById("attributes").textContent = "";
}

async function showFeature(feature) {
  clearPick();
  if (!(feature instanceof Cesium.Cesium3DTileFeature)) return null;
  state.picked = feature;
  state.pickedColor = Cesium.Color.clone(feature.color);
  const layer = state.layers.find((l) => l.tileset === feature.tileset);
  feature.color = Cesium.Color.CYAN.withAlpha(layer ? layer.opacity : 1);
  const props = {};
  for (const name of feature.getPropertyIds()) props[name] = feature.getProperty(name);
  return showAttributes(layer ? layer.title : "feature", props, layer && layer.collection,
    { tileset: layer && layer.id });
}

// The attribute panel: a title, the properties, then the OGC API Features record of
// collections/{collection}/items/{props.id}; resolves to {properties, record, ...extra} and
// tells every onPick listener.
async function showAttributes(titleText, props, collection, extra = {}) {
  const panel = document.getElementById("attributes");
  panel.textContent = "";
  const title = document.createElement("div");
  title.style.fontWeight = "bold";
  title.textContent = titleText;
  const table = document.createElement("table");
  for (const [k, v] of Object.entries(props)) row(table, k, v);
  const record = document.createElement("div");
  record.id = "record";
  panel.append(title, table, record);
  const result = { ...extra, collection: collection || null, properties: props, record: null };
  if (collection && props.id !== undefined && props.id !== null) {
    record.textContent = "loading record…";
    const answer = await fetch(api(`collections/${encodeURIComponent(collection)}/items/${encodeURIComponent(props.id)}`), { headers });
    if (!answer.ok) {
      record.textContent = `record: HTTP ${answer.status}`;
    } else {
      const item = (await answer.json()).properties || {};
      result.record = item;
      const named = Object.entries(item).filter(([k, v]) => (k === "name" || k.endsWith("code")) && v !== null);
      record.textContent = named.map(([k, v]) => `${k}: ${v}`).join("\n") || `${collection} ${props.id}`;
      record.style.whiteSpace = "pre-line";
    }
  }
  for (const listener of state.onPick) listener(result);
  return result;
}

// The position on the ground (or on a tileset) under a screen point, as a Cartographic.
function groundAt(x, y) {
  const scene = state.viewer.scene;
  const position = new Cesium.Cartesian2(x, y);
  const onModel = scene.pickPositionSupported ? scene.pickPosition(position) : undefined;
  const cartesian = onModel || scene.camera.pickEllipsoid(position, scene.globe.ellipsoid);
  return cartesian ? Cesium.Cartographic.fromCartesian(cartesian) : null;
}

// A click: the active tool's handler, else the 3D feature under it, else the first plugin
// (draped theme) with a feature there.
state.pick = async (x, y) => {
  if (state.clickHandler) return state.clickHandler({ x, y, ground: groundAt(x, y) });
  const hit = state.viewer.scene.pick(new Cesium.Cartesian2(x, y));
  // the terrain tileset is the ground the themes are draped on: they come first there
  const ground = hit instanceof Cesium.Cesium3DTileFeature
    && state.layers.some((l) => l.id === "terrain" && l.tileset === hit.tileset);
  if (hit instanceof Cesium.Cesium3DTileFeature && !ground) return showFeature(hit);
  clearPick();
  for (const plugin of state.plugins) {
    if (!plugin.pickAt) continue;
    const found = await plugin.pickAt(x, y);
    if (found) {
      return showAttributes(found.title, found.properties, found.collection,
        { theme: found.theme, layer: found.layer });
    }
  }
  return ground ? showFeature(hit) : null;
};
state.showAttributes = showAttributes;
state.clearPick = clearPick;
state.groundAt = groundAt;
state.setError = setError;

function loadedFeatures(tileset) {
  const out = [];
  const walk = (tile) => {
    if (tile.contentReady && tile.content) {
      const c = tile.content;
      for (let i = 0; i < (c.featuresLength || 0); i++) out.push(c.getFeature(i));
      for (const inner of c.innerContents || []) {
        for (let i = 0; i < (inner.featuresLength || 0); i++) out.push(inner.getFeature(i));
      }
    }
    for (const child of tile.children) walk(child);
  };
  walk(tileset.root);
  return out;
}

state.pickFeatureById = (tilesetId, id) => {
  const layer = state.layers.find((l) => l.id === tilesetId || l.collection === tilesetId);
  if (!layer) return Promise.resolve(null);
  const feature = loadedFeatures(layer.tileset).find((f) => f.getProperty("id") === id);
  return feature ? showFeature(feature) : Promise.resolve(null);
};
state.featureIds = (tilesetId) => {
  const layer = state.layers.find((l) => l.id === tilesetId);
  return layer ? loadedFeatures(layer.tileset).map((f) => f.getProperty("id")) : [];
};
state.setUnderground = setUnderground;

async function start() {
  const answer = await fetch(api("3dtiles"), { headers });
  if (!answer.ok) throw new Error(`GET /3dtiles: ${answer.status} ${await answer.text()}`);
  const listed = await answer.json();
  const viewer = new Cesium.Viewer("globe", {
    baseLayer: params.get("imagery") === "none" ? false : Cesium.ImageryLayer.fromProviderAsync(
      Cesium.TileMapServiceImageryProvider.fromUrl(
        Cesium.buildModuleUrl("Assets/Textures/NaturalEarthII"))),
    terrainProvider: new Cesium.EllipsoidTerrainProvider(),
    baseLayerPicker: false, geocoder: false, timeline: false, animation: false,
    homeButton: false, sceneModePicker: false, navigationHelpButton: false,
    fullscreenButton: false, infoBox: false, selectionIndicator: false,
  });
  state.viewer = viewer;
  // ?resolution=0.5: draw at that fraction of the screen's pixels (0.25-1), for machines that
  // render WebGL in software (no GPU, remote desktops); the page's layout is unchanged
  const resolution = Number(params.get("resolution"));
  if (resolution >= 0.25 && resolution <= 1) viewer.resolutionScale = resolution;
  viewer.scene.globe.depthTestAgainstTerrain = false;
  // a fixed sun from the south-east, high over the district: the clock's sun left the models
  // lit from below at night in China (dark, and pixel colours that changed with the hour)
  const enu = Cesium.Transforms.eastNorthUpToFixedFrame(Cesium.Cartesian3.fromDegrees(DEFAULT_VIEW[0], DEFAULT_VIEW[1]));
  viewer.scene.light = new Cesium.DirectionalLight({
    direction: Cesium.Matrix4.multiplyByPointAsVector(enu,
      Cesium.Cartesian3.normalize(new Cesium.Cartesian3(-0.3, 0.5, -1), new Cesium.Cartesian3()), new Cesium.Cartesian3()),
    intensity: 2.0,  // as the SunLight's
  });
  viewer.scene.renderError.addEventListener((scene, e) => setError(e));
  flyToHash();
  viewer.camera.moveEnd.addEventListener(writeHash);
  document.getElementById("underground").addEventListener("change", (e) => setUnderground(e.target.checked));
  new Cesium.ScreenSpaceEventHandler(viewer.scene.canvas).setInputAction(
    (click) => { state.pick(click.position.x, click.position.y).catch(setError); },
    Cesium.ScreenSpaceEventType.LEFT_CLICK);
  const loads = listed.map(async (t) => {
    const tileset = await Cesium.Cesium3DTileset.fromUrl(new Cesium.Resource({ url: t.url, headers }));
    // MIX: a white feature colour keeps the tile's own colours, the pick's cyan shows (yellow reads as the residential colour)
    tileset.colorBlendMode = Cesium.Cesium3DTileColorBlendMode.MIX;
    tileset.colorBlendAmount = 0.9;
    tileset.tileFailed.addEventListener((e) => setError(`${t.id}: ${e.url}: ${e.message}`));
    const extras = (tileset.asset && tileset.asset.extras) || {};
    return { id: t.id, title: t.title || t.id, url: t.url, collection: extras.layer || null, tileset, opacity: 1 };
  });
  state.layers = await Promise.all(loads);
  for (const layer of state.layers) viewer.scene.primitives.add(layer.tileset);
  layerPanel();
  const plugins = Promise.all(state.plugins.map((p) => (p.init ? p.init(state) : null)));
  const tilesets = new Promise((resolve) => {
    let frames = 0;
    const done = viewer.scene.postRender.addEventListener(() => {
      frames += 1;
      if (frames < 10 || !state.layers.every((l) => l.tileset.tilesLoaded)) return;
      done();
      resolve();
    });
  });
  await Promise.all([plugins, tilesets]);
  state.secondsToReady = (performance.now() - state.started) / 1000;
  if (document.body.dataset.ready !== "error") document.body.dataset.ready = "true";
}
window.addEventListener("error", (e) => setError(e.error || e.message));
window.addEventListener("unhandledrejection", (e) => setError(e.reason));
// plugins (classic and module scripts after this one) have registered by DOMContentLoaded
document.addEventListener("DOMContentLoaded", () => start().catch(setError));
