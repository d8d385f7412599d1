// The pages' charts: uPlot (served from node_modules as /web/uPlot.iife.min.js, a global) over GET /charts.
import { fmtNum, fmtSigned } from './common.js';

const POLL_MS = 2000;
/** Enough colours to tell a class's teams apart on a projector. */
export const PALETTE = ['#1f6feb', '#d1495b', '#2a9d8f', '#e9a000', '#7b2cbf', '#3d5a80', '#ef476f', '#118ab2', '#6a994e', '#bc6c25', '#8338ec', '#06d6a0', '#ff7f51', '#5e548e', '#9c6644', '#00a6fb'];

/**
 * Points of GET /charts gathered as they come: the first read gives the
 * session so far, each later read (since the last point) appends. One time
 * axis; a team that appears later has nulls before it.
 */
export class ChartData {
  constructor() {
    this.t = [];
    this.etfs = new Map(); // ETF -> {etf: [], nav: [], premium: []}
    this.teams = new Map(); // username -> pnl[]
    this.halts = [];
  }

  get last() {
    return this.t.length ? this.t[this.t.length - 1] : 0;
  }

  merge(body) {
    this.halts = body.halts ?? [];
    const skip = body.t.findIndex((t) => t > this.last);
    if (skip < 0) return false;
    const n0 = this.t.length;
    const add = body.t.length - skip;
    this.t.push(...body.t.slice(skip));
    const pad = (list, from) => {
      while (list.length < n0) list.push(null);
      list.push(...from.slice(skip));
    };
    for (const [name, s] of Object.entries(body.etfs)) {
      if (!this.etfs.has(name)) this.etfs.set(name, { etf: [], nav: [], premium: [] });
      const mine = this.etfs.get(name);
      pad(mine.etf, s.etf);
      pad(mine.nav, s.nav);
      pad(mine.premium, s.premium);
    }
    for (const tm of body.teams) {
      if (!this.teams.has(tm.username)) this.teams.set(tm.username, []);
      pad(this.teams.get(tm.username), tm.pnl);
    }
    // Series that this read did not mention still get a value per point.
    const fill = (list) => {
      while (list.length < n0 + add) list.push(null);
    };
    for (const s of this.etfs.values()) [s.etf, s.nav, s.premium].forEach(fill);
    for (const p of this.teams.values()) fill(p);
    return true;
  }
}

/** Follows GET /charts: the session so far, then new points every POLL_MS; `onData(data)` after each change. */
export function followCharts(query, onData) {
  const data = new ChartData();
  let timer = null;
  let stopped = false;
  const read = async () => {
    clearTimeout(timer);
    if (stopped) return;
    try {
      const q = new URLSearchParams({ ...query, ...(data.last ? { since: String(data.last) } : {}) });
      const res = await fetch(`/charts?${q}`);
      if (res.ok) {
        const body = await res.json();
        data.merge(body);
        onData(data);
      }
    } catch {
      // The gateway is restarting: the next read catches up.
    }
    if (!stopped) timer = setTimeout(read, POLL_MS);
  };
  void read();
  return {
    data,
    now: read,
    stop: () => {
      stopped = true;
      clearTimeout(timer);
    },
  };
}

/** A uPlot chart that takes its container's width and follows it (phones, projector). */
function sized(container, opts, data) {
  const width = () => Math.max(240, container.clientWidth || 600);
  const u = new uPlot({ ...opts, width: width() }, data, container);
  new ResizeObserver(() => u.setSize({ width: width(), height: opts.height })).observe(container);
  return u;
}

const secs = (t) => t.map((x) => x / 1000);
/** The time axis: the points' span, or a minute around a lone point (uPlot would otherwise spread it over years). */
const timeScale = { time: true, range: (_u, min, max) => (min === max || min === null ? [(min ?? Date.now() / 1000) - 30, (max ?? Date.now() / 1000) + 30] : [min, max]) };

/**
 * The ETF's mid against its NAV (left axis) and the premium/discount in %
 * (right axis), with the team's conversions marked: ▲ create, ▼ redeem.
 * `markers()` returns [{ts, price, op}] at draw time.
 */
export function priceChart(container, { height = 260, markers = () => [] } = {}) {
  let u = null;
  let etfName = null;
  const drawMarkers = (plot) => {
    const ctx = plot.ctx;
    const [xmin, xmax] = [plot.scales.x.min, plot.scales.x.max];
    let drawn = 0;
    ctx.save();
    for (const m of markers()) {
      const x = m.ts / 1000;
      if (m.price === null || m.price === undefined || x < xmin || x > xmax) continue;
      const px = plot.valToPos(x, 'x', true);
      const py = plot.valToPos(m.price, 'px', true);
      const s = 7 * devicePixelRatio;
      ctx.beginPath();
      if (m.op === 'create') {
        ctx.moveTo(px, py - s);
        ctx.lineTo(px - s, py + s);
        ctx.lineTo(px + s, py + s);
      } else {
        ctx.moveTo(px, py + s);
        ctx.lineTo(px - s, py - s);
        ctx.lineTo(px + s, py - s);
      }
      ctx.closePath();
      ctx.fillStyle = m.op === 'create' ? '#137333' : '#b3261e';
      ctx.strokeStyle = '#fff';
      ctx.lineWidth = devicePixelRatio;
      ctx.fill();
      ctx.stroke();
      drawn++;
    }
    ctx.restore();
    container.dataset.markers = String(drawn);
  };
  const opts = {
    height,
    cursor: { drag: { x: true, y: false } },
    legend: { live: true },
    scales: { x: timeScale, px: { auto: true }, pct: { auto: true } },
    axes: [
      {},
      { scale: 'px', values: (_u, v) => v.map((x) => fmtNum(x)), size: 70 },
      { scale: 'pct', side: 1, grid: { show: false }, values: (_u, v) => v.map((x) => `${x.toFixed(2)}%`), size: 60 },
    ],
    series: [
      { value: (_u, v) => (v === null ? '—' : new Date(v * 1000).toLocaleTimeString(undefined, { hour12: false })) },
      { label: 'ETF mid', scale: 'px', stroke: '#1f6feb', width: 2, spanGaps: true, value: (_u, v) => fmtNum(v) },
      { label: 'NAV', scale: 'px', stroke: '#14213d', width: 1.5, dash: [6, 4], spanGaps: true, value: (_u, v) => fmtNum(v) },
      { label: 'Premium', scale: 'pct', stroke: '#e9a000', width: 1, spanGaps: true, value: (_u, v) => (v === null ? '—' : `${v > 0 ? '+' : ''}${v.toFixed(2)}%`) },
    ],
    hooks: { draw: [drawMarkers] },
  };
  return {
    /** Draws `etf`'s series from `data`; makes the chart on the first call. */
    update(data, etf) {
      const s = data.etfs.get(etf);
      const cols = [secs(data.t), s?.etf ?? data.t.map(() => null), s?.nav ?? data.t.map(() => null), (s?.premium ?? data.t.map(() => null)).map((p) => (p === null ? null : p * 100))];
      container.dataset.points = String(s ? s.etf.filter((v) => v !== null).length : 0);
      container.dataset.first = data.t.length ? String(data.t[0]) : '';
      container.dataset.etf = etf ?? '';
      if (!u || etfName !== etf) {
        u?.destroy();
        etfName = etf;
        u = sized(container, opts, cols);
      } else u.setData(cols);
    },
    redraw() {
      u?.redraw(false);
    },
  };
}

/** P&L over time of one team or many (one line each). `highlight`: the team drawn thick. */
export function pnlChart(container, { height = 240, highlight = null, legend = true } = {}) {
  let u = null;
  let names = '';
  return {
    update(data) {
      const teams = [...data.teams.keys()];
      const cols = [secs(data.t), ...teams.map((t) => data.teams.get(t))];
      container.dataset.series = String(teams.length);
      container.dataset.points = String(teams.length ? Math.max(...teams.map((t) => data.teams.get(t).filter((v) => v !== null).length)) : 0);
      container.dataset.first = data.t.length ? String(data.t[0]) : '';
      if (!u || names !== teams.join('\n')) {
        u?.destroy();
        names = teams.join('\n');
        u = sized(
          container,
          {
            height,
            legend: { show: legend, live: true },
            scales: { x: timeScale },
            axes: [{}, { values: (_u, v) => v.map((x) => fmtSigned(x)), size: 80 }],
            series: [
              { value: (_u, v) => (v === null ? '—' : new Date(v * 1000).toLocaleTimeString(undefined, { hour12: false })) },
              ...teams.map((t, i) => ({ label: t, stroke: PALETTE[i % PALETTE.length], width: t === highlight || teams.length === 1 ? 2.5 : 1.5, spanGaps: true, value: (_u, v) => fmtSigned(v) })),
            ],
          },
          cols,
        );
      } else u.setData(cols);
    },
  };
}

