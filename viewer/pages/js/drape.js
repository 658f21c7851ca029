// The 2D themes draped on the ground of the 3D viewer (parcels by GB 50137 land use, work
// grids and communities, city components, incidents), their legends, a scale bar and
// picking of draped features. Drawn from the twin's own vector tiles (/tiles/{layers}/...mvt,
// decoded with @mapbox/vector-tile + pbf), coloured from /legends.
//
// Why one "district texture" per theme, draped on the terrain tileset: the ground here is the
// terrain *tileset* (a mesh 67-76 m above the ellipsoid) over an EllipsoidTerrainProvider
// globe, so imagery layers on the globe are hidden under it (measured: nothing of them shows
// in the fixed view). CesiumJS drapes imagery on 3D Tiles (tileset.imageryLayers), but picks one
// imagery level per glTF primitive, aiming at about one imagery tile per primitive: the
// sample's terrain is one primitive, so a Web Mercator provider would be draped at about z14
// (about 10 m a pixel, blurred grid lines), and forcing a deeper level needs one texture per
// covered tile, more than the shader's texture units. So each theme is drawn once, from the
// MVT tiles at a fixed zoom, into one canvas of about 1 m a pixel covering the terrain's
// rectangle, served as the single tile of a GeographicTilingScheme on that rectangle: one
// texture per theme, sharp enough from the fixed view, and no classification volumes that
// would also paint building walls and pipes. Without a terrain tileset the same layers go
// on the globe.
import { VectorTile } from "@mapbox/vector-tile";
import Pbf from "pbf";

const THEMES = [  // bottom to top (the draw order); picking asks them top down
  { id: "parcels", layers: ["parcels"], on: true },
  { id: "grids", layers: ["communities", "grids", "grid_labels"], on: true },
  { id: "components", layers: ["components"], on: false },  // also a 3D tileset of their own
  { id: "incidents", layers: ["incidents"], on: true },
];
const TITLES = {
  parcels: "地块 Land use", grids: "网格 Work grids", components: "城市部件 Components",
  incidents: "事件 Incidents",
};
//: the OGC API Features id of an MVT feature: the tile's feature id, or the code for grids
const ITEM_ID = {
  grids: (f) => f.properties.code, communities: (f) => f.properties.code,
  parcels: (f) => f.id, components: (f) => f.id, incidents: (f) => f.id,
};
const FETCH_ZOOM = 16;  // about 0.15 m per tile unit: finer than the texture
// the most MVT tiles one theme fetches for its texture: a drape of a district at z16 is
// about 200; a rectangle that needs more (an empty database answers the whole world as its
// bounds) is fetched at a lower zoom, and not at all when even the layers' minzoom needs more
const MAX_TILES = 1024;
const TEXTURE_PX = 2048;  // the longer side; about 0.9 m a pixel on the sample's terrain
const PICK_PX = 7;  // how near (screen pixels) a click must be to a point or an outline
const SCALE_PX = 100;  // the scale bar's measured width at the bottom centre
const EXTENT_BUFFER = 1.0;  // MVT features pass their tile by a buffer: clip to the tile

const state = {
  themes: [], legends: [], highlight: [], groundHeight: 0, groundRange: [-Infinity, Infinity],
  rectangle: null,
};
window.cimtwinDrape = state;

const deg = (r) => Cesium.Math.toDegrees(r);

function tileLonLat(z, x, y, extent, px, py) {
  const n = extent * 2 ** z;
  const lon = ((x * extent + px) / n) * 360 - 180;
  const lat = deg(Math.atan(Math.sinh(Math.PI * (1 - (2 * (y * extent + py)) / n))));
  return [lon, lat];
}

function tileRange(rect, z) {
  const n = 2 ** z;
  const tx = (lon) => Math.floor(((lon + 180) / 360) * n);
  const ty = (lat) => {
    const r = Cesium.Math.toRadians(lat);
    return Math.floor(((1 - Math.log(Math.tan(r) + 1 / Math.cos(r)) / Math.PI) / 2) * n);
  };
  return [tx(deg(rect.west)), tx(deg(rect.east)), ty(deg(rect.north)), ty(deg(rect.south))];
}

// Every feature of the theme's layers in the rectangle, in lon/lat: {layer, type (1 point,
// 2 line, 3 polygon), id, properties, parts: [[lon, lat]...][] , tile: [w, s, e, n]}.
async function loadFeatures(cv, theme, rect) {
  const names = theme.layers.filter((l) => theme.tilejson.vector_layers.some((v) => v.id === l));
  let zoom = Math.min(Math.max(FETCH_ZOOM, theme.tilejson.minzoom), theme.tilejson.maxzoom);
  const count = (z) => { const [a, b, c, d] = tileRange(rect, z); return (b - a + 1) * (d - c + 1); };
  while (zoom > theme.tilejson.minzoom && count(zoom) > MAX_TILES) zoom -= 1;
  if (count(zoom) > MAX_TILES) {
    console.warn(`drape: ${theme.id} not drawn: its extent needs ${count(zoom)} tiles at z${zoom}`);
    return [];
  }
  const [x0, x1, y0, y1] = tileRange(rect, zoom);
  const jobs = [];
  for (let x = x0; x <= x1; x++) {
    for (let y = y0; y <= y1; y++) {
      jobs.push((async () => {
        const url = cv.api(`tiles/${names.join(",")}/${zoom}/${x}/${y}.mvt`);
        const answer = await fetch(url, { headers: cv.headers });
        if (!answer.ok) throw new Error(`GET ${url.pathname}: ${answer.status}`);
        if (answer.status === 204) return [];
        const tile = new VectorTile(new Pbf(new Uint8Array(await answer.arrayBuffer())));
        const out = [];
        for (const name of Object.keys(tile.layers)) {
          const layer = tile.layers[name];
          const [w, n] = tileLonLat(zoom, x, y, layer.extent, 0, 0);
          const [e, s] = tileLonLat(zoom, x, y, layer.extent, layer.extent, layer.extent);
          for (let i = 0; i < layer.length; i++) {
            const f = layer.feature(i);
            const parts = f.loadGeometry().map((ring) => ring.map(
              (p) => tileLonLat(zoom, x, y, layer.extent, p.x, p.y)));
            out.push({ layer: name, type: f.type, id: f.id, properties: f.properties, parts,
              tile: [w, s, e, n] });
          }
        }
        return out;
      })());
    }
  }
  return (await Promise.all(jobs)).flat();
}

function themeColor(id, props) {
  const legend = state.legends.find((t) => t.id === id);
  return legend ? window.cimtwinLegend.colorOf(legend, props) : "#888888";
}

function gridColor(kind) {
  const legend = state.legends.find((t) => t.id === "grids");
  const entry = legend && legend.entries.find((e) => e.value === kind);
  return entry ? entry.color : "#3d85c6";
}

// The theme drawn into one canvas over the rectangle (lon/lat linear: the geographic
// tiling scheme the texture is draped with). Each MVT tile's features are clipped to their
// own tile, so a polygon in two tiles is not filled twice in the buffer between them.
function drawTheme(theme, rect, width, height) {
  const canvas = document.createElement("canvas");
  canvas.width = width; canvas.height = height;
  const ctx = canvas.getContext("2d");
  const [w, s, e, n] = [deg(rect.west), deg(rect.south), deg(rect.east), deg(rect.north)];
  const px = ([lon, lat]) => [((lon - w) / (e - w)) * width, ((n - lat) / (n - s)) * height];
  const path = (f) => {
    ctx.beginPath();
    for (const part of f.parts) {
      part.forEach((p, i) => { const [x, y] = px(p); if (i) ctx.lineTo(x, y); else ctx.moveTo(x, y); });
      if (f.type === 3) ctx.closePath();
    }
  };
  const clipped = (f, draw) => {
    const [a, b] = px([f.tile[0], f.tile[3]]);
    const [c, d] = px([f.tile[2], f.tile[1]]);
    ctx.save();
    ctx.beginPath();
    ctx.rect(a - EXTENT_BUFFER, b - EXTENT_BUFFER, c - a + 2 * EXTENT_BUFFER, d - b + 2 * EXTENT_BUFFER);
    ctx.clip();
    draw();
    ctx.restore();
  };
  const byLayer = (name) => theme.features.filter((f) => f.layer === name);
  ctx.lineJoin = "round";
  if (theme.id === "parcels") {
    for (const f of byLayer("parcels")) {
      clipped(f, () => {
        path(f);
        ctx.globalAlpha = 0.75;  // semi-transparent: the terrain's shading still reads
        ctx.fillStyle = themeColor("parcels", f.properties);
        ctx.fill("evenodd");
        ctx.globalAlpha = 1;
        ctx.strokeStyle = "rgba(60,60,60,0.8)";
        ctx.lineWidth = 1.5;
        ctx.stroke();
      });
    }
  } else if (theme.id === "grids") {
    for (const [name, kind, lineWidth] of [["grids", "grid", 3], ["communities", "community", 6]]) {
      for (const f of byLayer(name)) {
        clipped(f, () => {
          path(f);
          ctx.strokeStyle = gridColor(kind);
          ctx.lineWidth = lineWidth;
          ctx.stroke();
        });
      }
    }
    // names once per grid (the label layer has one point per grid; drawn unclipped)
    ctx.font = "bold 13px 'WenQuanYi Micro Hei', 'Noto Sans CJK SC', sans-serif";
    ctx.textAlign = "center"; ctx.textBaseline = "middle";
    ctx.lineWidth = 3; ctx.strokeStyle = "rgba(255,255,255,0.9)"; ctx.fillStyle = gridColor("community");
    const named = new Set();
    for (const f of byLayer("grid_labels")) {
      const code = f.properties.code;
      if (named.has(code) || !f.parts.length || !f.parts[0].length) continue;
      named.add(code);
      const [x, y] = px(f.parts[0][0]);
      const text = f.properties.name || code;
      ctx.strokeText(text, x, y);
      ctx.fillText(text, x, y);
    }
  } else {
    const radius = theme.id === "incidents" ? 9 : 5;
    for (const f of byLayer(theme.layers[0])) {
      for (const part of f.parts) {
        for (const p of part) {
          const [x, y] = px(p);
          ctx.beginPath();
          ctx.arc(x, y, radius, 0, 2 * Math.PI);
          ctx.fillStyle = themeColor(theme.id, f.properties);
          ctx.fill();
          ctx.lineWidth = 2; ctx.strokeStyle = "#ffffff";
          ctx.stroke();
        }
      }
    }
  }
  return canvas;
}

// A one-tile imagery provider: the canvas over the rectangle (CesiumJS's provider interface).
class CanvasImagery {
  constructor(canvas, rectangle, onImage) {
    this.tilingScheme = new Cesium.GeographicTilingScheme({
      rectangle, numberOfLevelZeroTilesX: 1, numberOfLevelZeroTilesY: 1,
    });
    this.rectangle = rectangle;
    this.tileWidth = canvas.width; this.tileHeight = canvas.height;
    // the tileset drape clamps its level to [minimumLevel, maximumLevel - 1]: level 0 only
    this.minimumLevel = 0; this.maximumLevel = 1;
    this.tileDiscardPolicy = undefined; this.errorEvent = new Cesium.Event();
    this.credit = undefined; this.proxy = undefined; this.hasAlphaChannel = true;
    this.canvas = canvas; this.onImage = onImage;
  }
  getTileCredits() { return undefined; }
  requestImage(x, y, level) {
    if (level !== 0 || x !== 0 || y !== 0) return Promise.resolve(blank());
    this.onImage();
    return Promise.resolve(this.canvas);
  }
  pickFeatures() { return undefined; }  // draped picking is the plugin's pickAt
}
let blankCanvas = null;
function blank() {
  if (!blankCanvas) { blankCanvas = document.createElement("canvas"); blankCanvas.width = blankCanvas.height = 1; }
  return blankCanvas;
}

function themeRows(cv) {
  const list = document.getElementById("theme-list");
  list.textContent = "";
  const heading = document.createElement("h3");
  heading.textContent = "2D themes (draped)";
  list.append(heading);
  for (const theme of [...state.themes].reverse()) {  // the top one first, as drawn
    const row = document.createElement("label");
    row.dataset.theme = theme.id;
    const shown = document.createElement("input");
    shown.type = "checkbox"; shown.checked = theme.layer.show; shown.className = "visible";
    shown.addEventListener("change", () => {
      theme.layer.show = shown.checked;
      if (!shown.checked && state.picked && state.picked.theme === theme.id) cv.clearPick();
      renderLegend(cv);
    });
    const opacity = document.createElement("input");
    opacity.type = "range"; opacity.min = "0"; opacity.max = "1"; opacity.step = "0.05";
    opacity.value = String(theme.layer.alpha); opacity.className = "opacity";
    opacity.addEventListener("input", () => { theme.layer.alpha = Number(opacity.value); });
    row.append(shown, " ", theme.title, " ", opacity);
    list.append(row);
  }
}

// The legend: every visible theme's, and the pipelines' while that tileset is shown (it is
// coloured by CJJ 61 network).
function renderLegend(cv) {
  const shown = state.themes.filter((t) => t.layer.show).map((t) => t.id);
  const pipes = cv.layers.find((l) => l.id === "pipelines");
  if (pipes && pipes.tileset.show) shown.unshift("pipelines");
  const box = document.getElementById("legend");
  window.cimtwinLegend.render(box, state.legends, shown);
  // two short columns a theme (see LEGEND_CSS): the whole label stays on hover
  for (const entry of box.querySelectorAll(".legend-entry")) entry.title = entry.textContent;
}

// Five themes' legends in one column overflowed the panel: two columns, smaller type.
const LEGEND_CSS = `
  #legend { font-size: 11px; }
  #legend .legend-theme { column-count: 2; column-gap: 6px; margin-bottom: 3px; }
  #legend .legend-title { column-span: all; }
  #legend .legend-entry { white-space: nowrap; overflow: hidden; text-overflow: ellipsis; }
  #scale .scale-label { font-size: 11px; }
`;
function addStyle() {
  const style = document.createElement("style");
  style.textContent = LEGEND_CSS;
  document.head.append(style);
}

// ---- scale bar --------------------------------------------------------------------------

// Where a screen point's ray meets the ground, taken as the ellipsoid raised by the terrain's
// mean height (not a depth-buffer pick: a building at the bottom centre would shorten it).
function groundPoint(cv, x, y) {
  const scene = cv.viewer.scene;
  const ray = scene.camera.getPickRay(new Cesium.Cartesian2(x, y));
  if (!ray) return null;
  const r = Cesium.Ellipsoid.WGS84.radii;
  const h = state.groundHeight;
  const raised = new Cesium.Ellipsoid(r.x + h, r.y + h, r.z + h);
  const hit = Cesium.IntersectionTests.rayEllipsoid(ray, raised);
  return hit ? Cesium.Ray.getPoint(ray, hit.start) : null;
}

function niceMetres(m) {
  const p = 10 ** Math.floor(Math.log10(m));
  for (const k of [5, 2, 1]) if (k * p <= m) return k * p;
  return p;
}

function updateScale(cv) {
  const box = document.getElementById("scale");
  const canvas = cv.viewer.scene.canvas;
  const y = canvas.clientHeight - 20;
  const cx = canvas.clientWidth / 2;
  const a = groundPoint(cv, cx - SCALE_PX / 2, y);
  const b = groundPoint(cv, cx + SCALE_PX / 2, y);
  if (!a || !b) { box.textContent = ""; return; }
  const metresPerPx = Cesium.Cartesian3.distance(a, b) / SCALE_PX;
  const metres = niceMetres(metresPerPx * SCALE_PX);
  const width = Math.round(metres / metresPerPx);
  const label = metres >= 1000 ? `${metres / 1000} km` : `${metres} m`;
  box.textContent = "";
  const bar = document.createElement("div");
  bar.className = "scale-bar";
  bar.style.cssText = `width:${width}px;height:6px;border:2px solid #333;border-top:none;`;
  const text = document.createElement("div");
  text.className = "scale-label";
  text.textContent = label;
  box.append(text, bar);
  box.dataset.metres = String(metres);
  box.dataset.pixels = String(width);
}

// ---- picking ----------------------------------------------------------------------------

function insideRing(lon, lat, ring) {
  let inside = false;
  for (let i = 0, j = ring.length - 1; i < ring.length; j = i++) {
    const [xi, yi] = ring[i]; const [xj, yj] = ring[j];
    if ((yi > lat) !== (yj > lat) && lon < ((xj - xi) * (lat - yi)) / (yj - yi) + xi) inside = !inside;
  }
  return inside;
}

function inside(lon, lat, f) {  // even-odd over all rings (holes included)
  let count = 0;
  for (const ring of f.parts) if (insideRing(lon, lat, ring)) count += 1;
  return count % 2 === 1;
}

// The ground under a screen point: the depth buffer's point when it is on the terrain, else
// (a roof, a station hall the pick passed through, the sky) the raised ellipsoid's.
function groundUnder(cv, x, y) {
  const picked = cv.groundAt(x, y);
  const [low, high] = state.groundRange;
  if (picked && picked.height >= low - 2 && picked.height <= high + 2) return picked;
  const point = groundPoint(cv, x, y);
  return point ? Cesium.Cartographic.fromCartesian(point) : null;
}

// Screen distance from (x, y) to a feature's points or edges at the click's height.
function screenDistance(cv, x, y, f, height) {
  const scene = cv.viewer.scene;
  const toScreen = ([lon, lat]) => Cesium.SceneTransforms.worldToWindowCoordinates(
    scene, Cesium.Cartesian3.fromDegrees(lon, lat, height));
  let best = Infinity;
  for (const part of f.parts) {
    const pts = part.map(toScreen);
    for (let i = 0; i < pts.length; i++) {
      const p = pts[i];
      if (!p) continue;
      best = Math.min(best, Math.hypot(p.x - x, p.y - y));
      const j = (i + 1) % pts.length;
      const q = f.type === 1 ? null : pts[j];
      if (!q || (f.type === 2 && i === pts.length - 1)) continue;
      // an edge wholly in the tile's buffer is where the tile cut the shape (or a copy of an
      // edge the next tile holds): not an outline
      if (!withinTile(...part[i], f) && !withinTile(...part[j], f)) continue;
      const dx = q.x - p.x, dy = q.y - p.y, len = dx * dx + dy * dy;
      const t = len ? Math.max(0, Math.min(1, ((x - p.x) * dx + (y - p.y) * dy) / len)) : 0;
      best = Math.min(best, Math.hypot(p.x + t * dx - x, p.y + t * dy - y));
    }
  }
  return best;
}

function withinTile(lon, lat, f) {  // hoisted: screenDistance uses it
  return lon >= f.tile[0] && lon <= f.tile[2] && lat >= f.tile[1] && lat <= f.tile[3];
}

// The topmost visible theme's feature under a screen point: points and outlines within
// PICK_PX, parcels by containment; grids by their outline, or by containment where no
// visible parcel is under the click.
function hitTest(cv, x, y) {
  const ground = groundUnder(cv, x, y);
  if (!ground) return null;
  const lon = deg(ground.longitude), lat = deg(ground.latitude);
  const height = ground.height;
  if (state.ground && !state.ground.show) return null;  // the themes went with the terrain
  const shown = state.themes.filter((t) => t.layer.show).reverse();
  const contained = (theme, layer) => theme.features.find(
    (f) => f.layer === layer && withinTile(lon, lat, f) && inside(lon, lat, f));
  for (const theme of shown) {
    if (theme.id === "incidents" || theme.id === "components") {
      let best = null, bestD = PICK_PX;
      for (const f of theme.features) {
        const d = screenDistance(cv, x, y, f, height);
        if (d <= bestD) { best = f; bestD = d; }
      }
      if (best) return { theme, feature: best };
    } else if (theme.id === "grids") {
      const near = theme.features.find((f) => f.layer === "grids" && withinTile(lon, lat, f)
        && inside(lon, lat, f) && screenDistance(cv, x, y, f, height) <= PICK_PX);
      if (near) return { theme, feature: near };
      const parcels = shown.find((t) => t.id === "parcels");
      const covered = parcels && contained(parcels, "parcels");
      const grid = contained(theme, "grids");
      if (grid && !covered) return { theme, feature: grid };
    } else if (theme.id === "parcels") {
      const parcel = contained(theme, "parcels");
      if (parcel) return { theme, feature: parcel };
    }
  }
  return null;
}

function clearHighlight(cv) {
  for (const entity of state.highlight) cv.viewer.entities.remove(entity);
  state.highlight = [];
  state.picked = null;
}

// The picked feature's whole geometry (from OGC API Features) outlined on the ground.
async function highlight(cv, layer, id, height) {
  const answer = await fetch(cv.api(`collections/${encodeURIComponent(layer)}/items/${encodeURIComponent(id)}`),
    { headers: cv.headers });
  if (!answer.ok) return;
  const geometry = (await answer.json()).geometry;
  if (!geometry || !state.picked || state.picked.id !== id) return;  // cleared meanwhile
  const polygons = geometry.type === "Polygon" ? [geometry.coordinates]
    : geometry.type === "MultiPolygon" ? geometry.coordinates : [];
  for (const polygon of polygons) {
    for (const ring of polygon) {
      state.highlight.push(cv.viewer.entities.add({
        polyline: {
          positions: Cesium.Cartesian3.fromDegreesArray(ring.flat()),
          width: 4, material: Cesium.Color.CYAN, clampToGround: true,
          classificationType: Cesium.ClassificationType.BOTH,
        },
      }));
    }
  }
  if (geometry.type === "Point") {
    const [lon, lat] = geometry.coordinates;
    state.highlight.push(cv.viewer.entities.add({
      position: Cesium.Cartesian3.fromDegrees(lon, lat, height + 1),
      point: { pixelSize: 16, color: Cesium.Color.CYAN.withAlpha(0.4), outlineColor: Cesium.Color.CYAN,
        outlineWidth: 3, disableDepthTestDistance: Number.POSITIVE_INFINITY },
    }));
  }
}

async function pickAt(cv, x, y) {
  const hit = hitTest(cv, x, y);
  if (!hit) return null;
  const { theme, feature } = hit;
  const id = ITEM_ID[feature.layer](feature);
  const properties = { ...feature.properties, id };
  const ground = groundUnder(cv, x, y);
  state.picked = { theme: theme.id, layer: feature.layer, id };
  highlight(cv, feature.layer, id, ground ? ground.height : state.groundHeight).catch(cv.setError);
  const layerTitle = (theme.tilejson.vector_layers.find((v) => v.id === feature.layer) || {}).description;
  return { theme: theme.id, layer: feature.layer, title: layerTitle || theme.title, properties,
    collection: feature.layer };
}

// ---- the plugin -------------------------------------------------------------------------

async function init(cv) {
  const viewer = cv.viewer;
  state.legends = await window.cimtwinLegend.load(cv.api("legends"), cv.headers);
  const terrain = cv.layers.find((l) => l.id === "terrain");
  const region = terrain && terrain.tileset.root.boundingVolume;
  const tilejsons = await Promise.all(THEMES.map(async (t) => {
    const answer = await fetch(cv.api(`tiles/${t.layers.join(",")}/tilejson.json`), { headers: cv.headers });
    if (!answer.ok) throw new Error(`GET tilejson of ${t.id}: ${answer.status}`);
    return answer.json();
  }));
  // the drape's rectangle: the terrain's, else every theme's bounds together
  let rect = region && region.rectangle ? Cesium.Rectangle.clone(region.rectangle) : null;
  if (region && region.minimumHeight !== undefined) {
    state.groundHeight = (region.minimumHeight + region.maximumHeight) / 2;
    state.groundRange = [region.minimumHeight, region.maximumHeight];
  }
  if (!rect) {
    const b = tilejsons.map((t) => t.bounds);
    rect = Cesium.Rectangle.fromDegrees(Math.min(...b.map((v) => v[0])), Math.min(...b.map((v) => v[1])),
      Math.max(...b.map((v) => v[2])), Math.max(...b.map((v) => v[3])));
  }
  state.rectangle = rect;
  const metresX = rect.width * Cesium.Ellipsoid.WGS84.maximumRadius * Math.cos(Cesium.Rectangle.center(rect).latitude);
  const metresY = rect.height * Cesium.Ellipsoid.WGS84.maximumRadius;
  const scale = TEXTURE_PX / Math.max(metresX, metresY);
  const [width, height] = [Math.round(metresX * scale), Math.round(metresY * scale)];
  const target = terrain ? terrain.tileset.imageryLayers : viewer.scene.imageryLayers;
  state.ground = terrain ? terrain.tileset : null;
  const shownOnce = [];
  state.themes = await Promise.all(THEMES.map(async (t, i) => {
    const theme = { ...t, title: TITLES[t.id], tilejson: tilejsons[i] };
    theme.features = await loadFeatures(cv, theme, rect);
    theme.canvas = drawTheme(theme, rect, width, height);
    let drawn;
    shownOnce.push(new Promise((resolve) => { drawn = resolve; }));
    theme.layer = new Cesium.ImageryLayer(new CanvasImagery(theme.canvas, rect, () => drawn()), { show: t.on });
    if (!t.on) drawn();  // a hidden layer is not requested: nothing to wait for
    return theme;
  }));
  for (const theme of state.themes) target.add(theme.layer);
  themeRows(cv);
  addStyle();
  renderLegend(cv);
  document.getElementById("layer-list").addEventListener("change", () => renderLegend(cv));
  cv.onClear.push(() => clearHighlight(cv));
  viewer.camera.percentageChanged = 0.05;
  viewer.camera.changed.addEventListener(() => updateScale(cv));
  viewer.camera.moveEnd.addEventListener(() => updateScale(cv));
  updateScale(cv);
  // ready once every shown theme's texture was handed to CesiumJS and a few frames drew it
  // (CesiumJS asks only when the ground is in view: a view elsewhere is ready after a while)
  await Promise.race([Promise.all(shownOnce), new Promise((resolve) => setTimeout(resolve, 20000))]);
  await new Promise((resolve) => {
    let frames = 0;
    const off = viewer.scene.postRender.addEventListener(() => {
      frames += 1;
      if (frames >= 5) { off(); resolve(); }
    });
  });
}

window.cimtwinViewer.plugins.push({
  name: "drape",
  init,
  pickAt: (x, y) => pickAt(window.cimtwinViewer, x, y),
});
