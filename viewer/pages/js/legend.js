// Theme legends for the 3D viewer and the 2D map, from GET /legends (the colour tables the
// styles are made from). window.cimtwinLegend.load(apiUrl, headers) -> Promise<themes>;
// window.cimtwinLegend.render(container, themes, only?) draws one titled block per theme
// (data-theme=ID), each entry a swatch and its label (data-value=VALUE).
(() => {
  async function load(url, headers = {}) {
    const answer = await fetch(url, { headers });
    if (!answer.ok) throw new Error(`GET /legends: ${answer.status}`);
    return (await answer.json()).themes;
  }

  function render(container, themes, only = null) {
    container.textContent = "";
    for (const theme of themes) {
      if (only && !only.includes(theme.id)) continue;
      const block = document.createElement("div");
      block.className = "legend-theme";
      block.dataset.theme = theme.id;
      const title = document.createElement("div");
      title.className = "legend-title";
      title.style.fontWeight = "bold";
      title.textContent = theme.title;
      block.append(title);
      for (const entry of theme.entries) {
        const line = document.createElement("div");
        line.className = "legend-entry";
        line.dataset.value = String(entry.value);
        const swatch = document.createElement("span");
        swatch.className = "legend-swatch";
        swatch.style.cssText = "display:inline-block;width:12px;height:12px;margin-right:4px;"
          + `vertical-align:middle;border:1px solid #888;background:${entry.color}`;
        line.append(swatch, entry.label);
        block.append(line);
      }
      container.append(block);
    }
  }

  // The colour of a feature's properties under a theme (the styles' match expressions).
  function colorOf(theme, properties) {
    if (!theme.property) return theme.fallback;
    let value = properties[theme.property];
    if (value === undefined || value === null) return theme.fallback;
    if (theme.prefix) value = String(value).slice(0, theme.prefix);
    const entry = theme.entries.find((e) => String(e.value) === String(value));
    return entry ? entry.color : theme.fallback;
  }

  window.cimtwinLegend = { load, render, colorOf };
})();
