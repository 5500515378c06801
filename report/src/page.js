// Strata report page: reads the data embedded in #strata-data, draws each section's charts
// (Chart.js) and its sortable table of numbers. No network access: everything is inline.
(function () {
  "use strict";
  const page = JSON.parse(document.getElementById("strata-data").textContent);
  const app = document.getElementById("app");
  const locale = "en-GB";
  const palette = ["#1f6feb", "#e36209", "#2da44e", "#8250df", "#cf222e", "#0a7b83",
    "#bf8700", "#6e7781", "#d63384", "#116329", "#953800", "#0550ae"];
  const drawn = [];

  function el(tag, attrs, ...kids) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (k === "text") e.textContent = v; else e.setAttribute(k, v);
    }
    for (const k of kids) if (k) e.appendChild(k);
    return e;
  }

  const formatters = {};
  function fmt(col, value, row, section) {
    if (value === null || value === undefined) return "–";
    switch (col.format) {
      case "integer":
        return Number(value).toLocaleString(locale, { maximumFractionDigits: 0 });
      case "decimal":
        return Number(value).toLocaleString(locale, { minimumFractionDigits: 2, maximumFractionDigits: 2 });
      case "percent":
        return Number(value).toLocaleString(locale, { style: "percent", minimumFractionDigits: 1, maximumFractionDigits: 1 });
      case "currency": {
        const code = currencyOf(col, row, section);
        // A row without a currency holds a count (a KPI tile of orders beside amounts).
        if (!code) return Number(value).toLocaleString(locale, { maximumFractionDigits: 2 });
        const key = code;
        if (!formatters[key]) {
          try {
            formatters[key] = new Intl.NumberFormat(locale, { style: "currency", currency: code });
          } catch (e) {
            formatters[key] = { format: (v) => Number(v).toLocaleString(locale, { minimumFractionDigits: 2, maximumFractionDigits: 2 }) + " " + code };
          }
        }
        return formatters[key].format(Number(value));
      }
      case "date":
        return String(value).slice(0, 10);
      case "datetime":
        return String(value).replace("T", " ").slice(0, 16) + " UTC";
      default:
        return String(value);
    }
  }

  function currencyOf(col, row, section) {
    if (col.currency) return col.currency;
    if (col.currency_column && row) {
      const i = section.columns.findIndex((c) => c.name === col.currency_column);
      if (i >= 0) return row[i];
    }
    return null;
  }

  function colIndex(section, name) {
    return section.columns.findIndex((c) => c.name === name);
  }

  function table(section) {
    const wrap = el("div", { class: "table-wrap" });
    const t = el("table", { class: "numbers", "data-section": section.id });
    const head = el("tr");
    const body = el("tbody");
    let sortCol = -1, asc = true;
    section.columns.forEach((c, i) => {
      const numeric = ["integer", "decimal", "currency", "percent"].includes(c.format);
      const th = el("th", { scope: "col", class: numeric ? "num" : "", tabindex: "0", title: "Sort by " + c.label, text: c.label });
      const sort = () => {
        asc = sortCol === i ? !asc : !numeric;
        sortCol = i;
        head.querySelectorAll("th").forEach((h) => h.removeAttribute("aria-sort"));
        th.setAttribute("aria-sort", asc ? "ascending" : "descending");
        const rows = section.rows.slice().sort((a, b) => {
          const x = a[i], y = b[i];
          if (x === y) return 0;
          if (x === null) return 1;
          if (y === null) return -1;
          const r = numeric ? Number(x) - Number(y) : String(x).localeCompare(String(y));
          return asc ? r : -r;
        });
        fill(rows);
      };
      th.addEventListener("click", sort);
      th.addEventListener("keydown", (e) => { if (e.key === "Enter") sort(); });
      head.appendChild(th);
    });
    function fill(rows) {
      body.replaceChildren(...rows.map((r) => {
        const tr = el("tr");
        section.columns.forEach((c, i) => {
          const numeric = ["integer", "decimal", "currency", "percent"].includes(c.format);
          tr.appendChild(el("td", { class: numeric ? "num" : "", text: fmt(c, r[i], r, section) }));
        });
        return tr;
      }));
    }
    fill(section.rows);
    t.appendChild(el("thead", {}, head));
    t.appendChild(body);
    wrap.appendChild(t);
    if (section.total_rows > section.rows.length) {
      wrap.appendChild(el("p", { class: "note", text: `The first ${section.rows.length.toLocaleString(locale)} of ${section.total_rows.toLocaleString(locale)} rows.` }));
    }
    return wrap;
  }

  function chart(section, rows, splitValue, container) {
    const xi = colIndex(section, section.x);
    const si = section.series ? colIndex(section, section.series) : -1;
    const labels = [];
    const seen = new Map();
    for (const r of rows) {
      const k = String(r[xi]);
      if (!seen.has(k)) { seen.set(k, labels.length); labels.push(k); }
    }
    const seriesValues = si >= 0 ? [...new Set(rows.map((r) => String(r[si])))] : [null];
    const datasets = [];
    for (const yName of section.y) {
      const yi = colIndex(section, yName);
      const ycol = section.columns[yi];
      for (const sv of seriesValues) {
        const data = new Array(labels.length).fill(null);
        for (const r of rows) {
          if (sv !== null && String(r[si]) !== sv) continue;
          data[seen.get(String(r[xi]))] = r[yi] === null ? null : Number(r[yi]);
        }
        const name = [sv, section.y.length > 1 || sv === null ? ycol.label : null].filter(Boolean).join(" · ");
        const color = palette[datasets.length % palette.length];
        datasets.push({
          label: name, data, borderColor: color, backgroundColor: section.chart === "line" ? color : color + "cc",
          borderWidth: section.chart === "line" ? 2 : 0, pointRadius: labels.length > 60 ? 0 : 2, spanGaps: true,
          tension: 0.2, skipNull: true,
        });
      }
    }
    const first = section.columns[colIndex(section, section.y[0])];
    const sample = rows[0] || null;
    const currency = first.format === "currency" ? currencyOf(first, sample, section) : null;
    const sameCurrency = currency && rows.every((r) => currencyOf(first, r, section) === currency);
    const yTitle = (section.y.length === 1 ? first.label
      : first.format === "currency" ? "Amount" : section.y.map((n) => section.columns[colIndex(section, n)].label).join(", "))
      + (first.format === "currency" ? (sameCurrency ? ` (${currency})` : " (own currency)") : first.format === "percent" ? " (%)" : "");
    const tick = (v) => {
      if (first.format === "percent") return Number(v).toLocaleString(locale, { style: "percent", maximumFractionDigits: 0 });
      if (first.format === "currency" && sameCurrency) return fmt(first, v, sample, section).replace(/\.00$/, "");
      return Number(v).toLocaleString(locale, { maximumFractionDigits: 2 });
    };
    const horizontal = section.chart === "horizontal_bar";
    const stacked = section.chart === "stacked_bar";
    const canvas = el("canvas", { role: "img", "aria-label": section.title + (splitValue ? " — " + splitValue : "") });
    const box = el("div", { class: "chart" }, canvas);
    container.appendChild(box);
    const xTitle = section.columns[xi].label;
    const valueAxis = { beginAtZero: section.chart !== "line", stacked, title: { display: true, text: yTitle }, ticks: { callback: tick } };
    const catAxis = { stacked, title: { display: true, text: xTitle }, ticks: { autoSkip: true, maxRotation: 0 } };
    const c = new Chart(canvas, {
      type: section.chart === "line" ? "line" : "bar",
      data: { labels, datasets },
      options: {
        indexAxis: horizontal ? "y" : "x",
        animation: false,
        responsive: true,
        maintainAspectRatio: false,
        interaction: { mode: "index", intersect: false },
        plugins: {
          title: { display: true, text: section.title + (splitValue ? " — " + splitValue : ""), font: { size: 14 } },
          legend: { display: datasets.length > 1, position: "bottom" },
          tooltip: {
            callbacks: {
              label: (ctx) => {
                const yn = section.y[Math.floor(ctx.datasetIndex / seriesValues.length)];
                const col = section.columns[colIndex(section, yn)];
                const row = rows.find((r) => String(r[xi]) === labels[ctx.dataIndex] && (si < 0 || String(r[si]) === seriesValues[ctx.datasetIndex % seriesValues.length]));
                return ctx.dataset.label + ": " + fmt(col, ctx.raw, row, section);
              },
            },
          },
        },
        scales: horizontal ? { x: valueAxis, y: catAxis } : { x: catAxis, y: valueAxis },
      },
    });
    drawn.push({ section: section.id, title: section.title, split: splitValue, canvas, chart: c, datasets: datasets.length, points: datasets.reduce((n, d) => n + d.data.filter((v) => v !== null).length, 0) });
  }

  function kpi(section) {
    const box = el("div", { class: "kpi" });
    const xi = colIndex(section, section.x);
    const vi = colIndex(section, section.y[0]);
    const pi = section.y.length > 1 ? colIndex(section, section.y[1]) : -1;
    for (const r of section.rows) {
      const tile = el("div", { class: "tile" },
        el("div", { class: "label", text: String(r[xi]) }),
        el("div", { class: "value", text: fmt(section.columns[vi], r[vi], r, section) }));
      if (pi >= 0 && r[pi] !== null && Number(r[pi]) !== 0 && r[vi] !== null) {
        const change = (Number(r[vi]) - Number(r[pi])) / Math.abs(Number(r[pi]));
        const up = change >= 0;
        tile.appendChild(el("div", { class: "change " + (up ? "up" : "down"),
          text: (up ? "▲ " : "▼ ") + Math.abs(change).toLocaleString(locale, { style: "percent", maximumFractionDigits: 1 })
            + " vs " + fmt(section.columns[pi], r[pi], r, section) + " before" }));
      }
      box.appendChild(tile);
    }
    return box;
  }

  // The page.
  const header = el("header", {},
    el("h1", { text: page.title }),
    page.description ? el("p", { class: "lead", text: page.description }) : null,
    el("p", { class: "meta", text: `Project ${page.project} · data as of ${String(page.generated_at).replace("T", " ").slice(0, 16)} UTC` }));
  const nav = el("nav", {});
  for (const s of page.sections) nav.appendChild(el("a", { href: "#" + s.id, text: s.title }));
  header.appendChild(nav);
  app.appendChild(header);
  const main = el("main");
  app.appendChild(main);
  for (const s of page.sections) {
    const card = el("section", { id: s.id, class: "card " + (s.chart === "table" ? "table-only" : "") },
      el("h2", { text: s.title }),
      s.description ? el("p", { class: "desc", text: s.description }) : null);
    if (s.rows.length === 0) {
      card.appendChild(el("p", { class: "empty", text: "No rows yet." }));
      main.appendChild(card);
      continue;
    }
    const body = el("div", { class: "body" });
    if (s.chart === "kpi") {
      body.appendChild(kpi(s));
    } else if (s.chart !== "table") {
      const charts = el("div", { class: "charts" });
      body.appendChild(charts);
      if (s.split_by) {
        const si = colIndex(s, s.split_by);
        for (const v of [...new Set(s.rows.map((r) => String(r[si])))].sort()) {
          chart(s, s.rows.filter((r) => String(r[si]) === v), v, charts);
        }
      } else {
        chart(s, s.rows, null, charts);
      }
    }
    const details = el("details", { class: "numbers-box" }, el("summary", { text: `The numbers (${s.total_rows.toLocaleString(locale)} rows)` }), table(s));
    if (s.chart === "table") details.setAttribute("open", "");
    body.appendChild(details);
    card.appendChild(body);
    main.appendChild(card);
  }
  const inputs = Object.entries(page.inputs || {}).map(([t, v]) => `${t} v${v}`).join(", ");
  app.appendChild(el("footer", { text: "Generated by Strata from " + (inputs || "the lake") + "." }));
  window.strataReport = {
    ready: true,
    data: page,
    charts: drawn.map((d) => ({ section: d.section, title: d.title, split: d.split, datasets: d.datasets, points: d.points })),
  };
})();
