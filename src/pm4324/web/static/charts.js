/* Small hand-written SVG charts (no library, works offline): phasors, lines, bars, time
   series with a min/max band, columns. */
"use strict";
const Charts = (() => {
  const esc = (s) => String(s).replace(/[&<>"]/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;" }[c]));
  const CLASSES = ["va", "vb", "vc"];

  /* Phasor diagram: voltages as long arrows, currents as short ones, angles counter-clockwise. */
  function phasors(v, i) {
    const R = 90, c = 110;
    const vmax = Math.max(1e-9, ...v.map((p) => p.rms || 0));
    const imax = Math.max(1e-9, ...i.map((p) => p.rms || 0));
    let out = `<svg viewBox="0 0 220 220" role="img" aria-label="phasor diagram">`;
    out += `<circle cx="${c}" cy="${c}" r="${R}" class="axis" fill="none"/>`;
    out += `<line x1="${c - R}" y1="${c}" x2="${c + R}" y2="${c}" class="axis"/><line x1="${c}" y1="${c - R}" x2="${c}" y2="${c + R}" class="axis"/>`;
    const arrow = (p, len, k, dash, label) => {
      if (p.rms == null || p.deg == null) return "";
      const a = (p.deg * Math.PI) / 180, x = c + len * Math.cos(a), y = c - len * Math.sin(a);
      return `<line x1="${c}" y1="${c}" x2="${x.toFixed(1)}" y2="${y.toFixed(1)}" class="${CLASSES[k]}" stroke-width="${dash ? 2 : 3}" ${dash ? 'stroke-dasharray="5 3"' : ""}/>` +
        `<circle cx="${x.toFixed(1)}" cy="${y.toFixed(1)}" r="3" class="${CLASSES[k]}"/>` +
        `<text x="${(x + 4).toFixed(1)}" y="${(y - 4).toFixed(1)}">${esc(label)}</text>`;
    };
    v.forEach((p, k) => { out += arrow(p, (R * (p.rms || 0)) / vmax, k, false, p.name); });
    i.forEach((p, k) => { out += arrow(p, (0.7 * R * (p.rms || 0)) / imax, k, true, p.name); });
    return out + "</svg>";
  }

  /* At least 4 % of the magnitude, so steady values do not draw their noise as a cliff. */
  function niceRange(lo, hi) {
    if (!isFinite(lo) || !isFinite(hi)) return [0, 1];
    const span = Math.max(hi - lo, 0.04 * Math.max(Math.abs(lo), Math.abs(hi)), 1e-9);
    const mid = (lo + hi) / 2;
    return [Math.min(lo, mid - span / 2), Math.max(hi, mid + span / 2)];
  }

  /* Line chart: series = [{values:[...], cls, label}], x = sample index or given xs. */
  function lines(series, opts = {}) {
    const W = opts.width || 600, H = opts.height || 200, L = 64, B = 18, T = 8;
    const all = series.flatMap((s) => s.values.filter((x) => x != null));
    let [lo, hi] = niceRange(Math.min(...all), Math.max(...all));
    if (opts.zero) { lo = Math.min(lo, 0); hi = Math.max(hi, 0); }
    const n = Math.max(2, ...series.map((s) => s.values.length));
    const X = (k) => L + ((W - L - 4) * k) / (n - 1), Y = (y) => T + ((H - T - B) * (hi - y)) / (hi - lo);
    let out = `<svg viewBox="0 0 ${W} ${H}" role="img" aria-label="${esc(opts.label || "chart")}">`;
    for (const y of [lo, (lo + hi) / 2, hi]) {
      out += `<line x1="${L}" x2="${W - 4}" y1="${Y(y).toFixed(1)}" y2="${Y(y).toFixed(1)}" class="axis"/>`;
      const yv = Math.abs(y) < 1e-3 * (hi - lo) ? 0 : y;
      out += `<text x="${L - 4}" y="${(Y(y) + 4).toFixed(1)}" text-anchor="end">${esc(opts.fmt ? opts.fmt(yv) : yv.toPrecision(3))}</text>`;
    }
    if (lo < 0 && hi > 0) out += `<line x1="${L}" x2="${W - 4}" y1="${Y(0)}" y2="${Y(0)}" class="axis" stroke-width="2"/>`;
    series.forEach((s) => {
      const pts = s.values.map((y, k) => (y == null ? null : `${X(k).toFixed(1)},${Y(y).toFixed(1)}`)).filter(Boolean);
      out += `<polyline points="${pts.join(" ")}" style="fill:none" class="${s.cls || ""}" stroke-width="1.8"/>`;
    });
    if (opts.xlabels) out += opts.xlabels.map(([k, t], j) => `<text x="${X(k).toFixed(1)}" y="${H - 3}" text-anchor="${j ? "end" : "start"}">${esc(t)}</text>`).join("");
    const legend = series.map((s, k) => `<text x="${L + 8 + k * 40}" y="${T + 12}" class="${s.cls || ""}" style="stroke:none">${esc(s.label || "")}</text>`);
    return out + legend.join("") + "</svg>";
  }

  /* Bars for harmonic orders 1..N; with skipFirst the scale fits orders 2..N and the
     fundamental's bar is cut at the top (its value is in its tooltip). */
  function bars(values, opts = {}) {
    const W = 600, H = opts.height || 180, L = 64, B = 18, T = 8, n = values.length;
    const scaled = opts.skipFirst ? values.slice(1) : values;
    const hi = 1.1 * Math.max(1e-12, ...scaled.map((x) => x || 0));
    const bw = (W - L - 4) / n;
    let out = `<svg viewBox="0 0 ${W} ${H}" role="img" aria-label="${esc(opts.label || "bars")}">`;
    out += `<line x1="${L}" x2="${W - 4}" y1="${H - B}" y2="${H - B}" class="axis"/>`;
    out += `<text x="${L - 4}" y="${T + 8}" text-anchor="end">${esc(opts.fmt ? opts.fmt(hi) : hi.toPrecision(3))}</text>`;
    values.forEach((x, k) => {
      const h = Math.min(1, (x || 0) / hi) * (H - T - B);
      out += `<rect x="${(L + k * bw + 1).toFixed(1)}" y="${(H - B - h).toFixed(1)}" width="${Math.max(1, bw - 2).toFixed(1)}" height="${h.toFixed(1)}" class="${opts.cls || "va"}" data-order="${k + 1}"><title>order ${k + 1}: ${esc(opts.fmt ? opts.fmt(x) : x)}</title></rect>`;
      if (k === 0 && opts.skipFirst && x > hi) out += `<text x="${(L + bw + 2).toFixed(1)}" y="${T + 10}">◂ ${esc(opts.fmt ? opts.fmt(x) : x)} (cut)</text>`;
      if ((k + 1) % 5 === 0 || k === 0) out += `<text x="${(L + (k + 0.5) * bw).toFixed(1)}" y="${H - 3}" text-anchor="middle">${k + 1}</text>`;
    });
    return out + "</svg>";
  }
  /* A history trend on a time axis [t0, t1]: the mean as a line (broken where there is no
     value), the min..max of each point as a band behind it. */
  function timeLines(tr, opts = {}) {
    const W = opts.width || 1200, H = opts.height || 320, L = 64, B = 18, T = 8;
    const all = [...tr.min, ...tr.max, ...tr.mean].filter((x) => x != null);
    const [lo, hi] = niceRange(Math.min(...all), Math.max(...all));
    const t0 = opts.t0, t1 = Math.max(opts.t1, opts.t0 + 1);
    const X = (t) => L + ((W - L - 4) * (t - t0)) / (t1 - t0), Y = (y) => T + ((H - T - B) * (hi - y)) / (hi - lo);
    let out = `<svg viewBox="0 0 ${W} ${H}" role="img" aria-label="${esc(opts.label || "trend")}" data-points="${tr.t.length}">`;
    for (const y of [lo, (lo + hi) / 2, hi]) {
      out += `<line x1="${L}" x2="${W - 4}" y1="${Y(y).toFixed(1)}" y2="${Y(y).toFixed(1)}" class="axis"/>`;
      out += `<text x="${L - 4}" y="${(Y(y) + 4).toFixed(1)}" text-anchor="end">${esc(opts.fmt ? opts.fmt(y) : y.toPrecision(3))}</text>`;
    }
    const step = tr.t.length > 1 ? Math.min(...tr.t.slice(1).map((t, k) => t - tr.t[k])) : 60;
    const runs = []; let run = [];
    tr.t.forEach((t, k) => {
      const ok = tr.mean[k] != null;
      if (!ok || (run.length && t - tr.t[run.at(-1)] > 2.5 * step)) { if (run.length) runs.push(run); run = []; }
      if (ok) run.push(k);
    });
    if (run.length) runs.push(run);
    for (const r of runs) {
      const top = r.map((k) => `${X(tr.t[k]).toFixed(1)},${Y(tr.max[k] ?? tr.mean[k]).toFixed(1)}`);
      const bottom = r.slice().reverse().map((k) => `${X(tr.t[k]).toFixed(1)},${Y(tr.min[k] ?? tr.mean[k]).toFixed(1)}`);
      out += `<polygon points="${[...top, ...bottom].join(" ")}" class="band ${opts.cls || "va"}"/>`;
      out += `<polyline points="${r.map((k) => `${X(tr.t[k]).toFixed(1)},${Y(tr.mean[k]).toFixed(1)}`).join(" ")}" style="fill:none" class="${opts.cls || "va"}" stroke-width="1.6"/>`;
    }
    (opts.xlabels || []).forEach(([t, text], j, a) => {
      out += `<text x="${X(t).toFixed(1)}" y="${H - 3}" text-anchor="${j === 0 ? "start" : j === a.length - 1 ? "end" : "middle"}">${esc(text)}</text>`;
    });
    return out + "</svg>";
  }

  /* Columns with a label under some of them: items = [{key, value, label, title}]; ``mark``
     is the index drawn as the maximum. */
  function columns(items, opts = {}) {
    const W = opts.width || 600, H = opts.height || 200, L = 64, B = 18, T = 14, n = Math.max(1, items.length);
    const hi = 1.1 * Math.max(1e-12, ...items.map((x) => x.value || 0));
    const bw = (W - L - 4) / n, every = Math.ceil(n / (opts.labels || 8));
    let out = `<svg viewBox="0 0 ${W} ${H}" role="img" aria-label="${esc(opts.label || "columns")}">`;
    out += `<line x1="${L}" x2="${W - 4}" y1="${H - B}" y2="${H - B}" class="axis"/>`;
    out += `<text x="${L - 4}" y="${T + 4}" text-anchor="end">${esc(opts.fmt ? opts.fmt(hi) : hi.toPrecision(3))}</text>`;
    items.forEach((x, k) => {
      const h = Math.max(0, ((x.value || 0) / hi) * (H - T - B)), max = k === opts.mark;
      out += `<rect x="${(L + k * bw + 1).toFixed(1)}" y="${(H - B - h).toFixed(1)}" width="${Math.max(1, bw - 2).toFixed(1)}" height="${h.toFixed(1)}" class="${max ? "vc max" : opts.cls || "vb"}" data-key="${esc(x.key)}" data-raw="${x.value ?? ""}"><title>${esc(x.title || "")}</title></rect>`;
      if (max) out += `<text x="${(L + (k + 0.5) * bw).toFixed(1)}" y="${(H - B - h - 3).toFixed(1)}" text-anchor="middle" class="max-label">▼ max</text>`;
      if (k % every === 0) out += `<text x="${(L + (k + 0.5) * bw).toFixed(1)}" y="${H - 3}" text-anchor="middle">${esc(x.label)}</text>`;
    });
    return out + "</svg>";
  }
  return { phasors, lines, bars, timeLines, columns, esc };
})();
