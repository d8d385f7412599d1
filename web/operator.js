// The operator's page: every team's positions, conversions, feed health and alerts, refreshed every second.
import { $, el, basicAuth, fmtNum, fmtSigned, fmtTime, signClass, readJson, fillRows, flash } from './common.js';
import { followCharts, pnlChart } from './charts.js';
import { loadLeaderboard } from './leaderboard.js';

const REFRESH_MS = 1000;

let auth = null; // the Authorization header, in this page's memory only
let timer = null;
let lastCells = new Map(); // "team|ticker" -> quantity shown, to flash what changed
let tickerOrder = [];

$('#signin-form').addEventListener('submit', async (e) => {
  e.preventDefault();
  $('#signin-button').disabled = true;
  auth = basicAuth($('#username').value.trim(), $('#password').value);
  await loadOrder();
  await refresh(true);
  $('#signin-button').disabled = false;
});

$('#sign-out').addEventListener('click', () => signOut());

/** Halt or resume conversions through the operator API (the engine journals who and when). */
async function control(action) {
  const etf = $('#halt-etf').value;
  const body = { ...(etf ? { etf_name: etf } : {}), ...(action === 'halt' ? { reason: $('#halt-reason').value.trim() } : {}) };
  const res = await fetch(`/operator/api/${action}`, { method: 'POST', headers: { authorization: auth, 'content-type': 'application/json' }, body: JSON.stringify(body) });
  const answer = await readJson(res);
  $('#halt-error').hidden = res.ok;
  $('#halt-error').textContent = res.ok ? '' : answer.error?.message ?? `HTTP ${res.status}`;
  if (res.ok) renderHalts(answer.halts);
}
$('#halt-form').addEventListener('submit', (e) => {
  e.preventDefault();
  void control('halt');
});
$('#resume-button').addEventListener('click', () => void control('resume'));

function renderHalts(halts) {
  const p = $('#halts');
  p.dataset.state = halts.length ? 'halted' : 'open';
  p.textContent = halts.length
    ? halts.map((h) => `Halted: ${h.etf ?? 'every ETF'}${h.reason ? ` (${h.reason})` : ''}, by ${h.by} at ${fmtTime(h.since)}.`).join(' ')
    : 'Conversions open.';
}

function signOut(message) {
  auth = null;
  clearTimeout(timer);
  classCharts?.stop();
  classCharts = null;
  lastCells = new Map();
  $('#board').hidden = true;
  $('#who').hidden = true;
  $('#signin').hidden = false;
  $('#password').value = '';
  $('#signin-error').hidden = !message;
  $('#signin-error').textContent = message ?? '';
}

/** Column order: each ETF's basket, then the ETF, as /etfs lists them. */
async function loadOrder() {
  try {
    const body = await readJson(await fetch('/etfs'));
    tickerOrder = [...new Set((body.etfs ?? []).flatMap((e) => [...e.components.map((c) => c.ticker), e.name]))];
    $('#halt-etf').replaceChildren(el('option', { value: '' }, 'every ETF'), ...(body.etfs ?? []).map((e) => el('option', { value: e.name }, e.name)));
  } catch {
    tickerOrder = [];
  }
}

async function refresh(first = false) {
  clearTimeout(timer);
  if (!auth) return;
  let res;
  try {
    res = await fetch('/operator/api/overview', { headers: { authorization: auth } });
  } catch {
    setLive('down', 'gateway unreachable');
    timer = setTimeout(refresh, REFRESH_MS);
    return;
  }
  const body = await readJson(res);
  if (res.status === 401) return signOut('Wrong operator username or password.');
  if (first) {
    $('#signin').hidden = true;
    $('#board').hidden = false;
    $('#who').hidden = false;
    startClassCharts();
  }
  if (res.ok) {
    render(body);
    setLive('live', `updated ${fmtTime(body.ts)}`);
    const rulesRes = await fetch('/operator/api/rules', { headers: { authorization: auth } }).catch(() => null);
    const rules = rulesRes ? await readJson(rulesRes) : null;
    if (rules?.halts) renderHalts(rules.halts);
  } else {
    setLive('down', body.error?.message ?? `HTTP ${res.status}`);
  }
  timer = setTimeout(refresh, REFRESH_MS);
}

function setLive(state, text) {
  $('#live-dot').dataset.state = state;
  $('#live-text').textContent = text;
}

function render(o) {
  $('#t-accounts').textContent = fmtNum(o.accounts.length);
  $('#t-journal').textContent = fmtNum(o.journal_seq);
  $('#t-fills').textContent = fmtNum(o.fill_seq);
  $('#t-ws').textContent = fmtNum(o.ws.connections);
  $('#t-feed').textContent = o.feed.live ? 'live' : 'silent';
  $('#t-feed-tile').dataset.state = o.feed.live ? 'ok' : 'bad';
  renderPositions(o.accounts);
  renderFeed(o.feed);
  renderAlerts(o.alerts, o.feed.problems ?? [], o.roster_refused ?? [], systemRows(o));
  renderConversions(o.conversions);
  // Every other refresh: the ranking is one engine read of every account.
  if (renders++ % 2 === 0) void loadLeaderboard($('#leaderboard tbody'));
}
let renders = 0;

function renderPositions(accounts) {
  const held = new Set(accounts.flatMap((a) => Object.keys(a.holdings)));
  const columns = [...tickerOrder.filter((t) => held.has(t)), ...[...held].filter((t) => !tickerOrder.includes(t)).sort()];
  $('#positions thead').replaceChildren(
    el('tr', {}, el('th', {}, 'Team'), el('th', { class: 'num' }, 'Id'), el('th', { class: 'num' }, 'Cash'), el('th', { class: 'num' }, 'P&L'), columns.map((t) => el('th', { class: 'num' }, t))),
  );
  const seen = new Map();
  const rows = accounts.map((a) =>
    el(
      'tr',
      { 'data-team': a.username },
      el('td', {}, el('strong', {}, a.username)),
      el('td', { class: 'num muted' }, a.client_id),
      el('td', { class: `num ${signClass(a.cash ?? 0)}`, 'data-field': 'cash' }, fmtNum(a.cash ?? 0)),
      el('td', { class: `num ${signClass(a.pnl?.total ?? 0)}`, 'data-field': 'pnl', title: [a.pnl?.unmarked?.length ? `not marked: ${a.pnl.unmarked.join(', ')}` : '', a.pnl?.stale?.length ? `at the last two-sided mid: ${a.pnl.stale.map((m) => `${m.ticker} ${Math.round(m.age_ms / 1000)} s old`).join(', ')}` : ''].filter(Boolean).join('; ') }, fmtNum(a.pnl?.total ?? 0)),
      columns.map((t) => {
        const q = a.holdings[t] ?? 0;
        const key = `${a.username}|${t}`;
        seen.set(key, q);
        const cell = el('td', { class: `num ${signClass(q)}`, 'data-ticker': t }, q === 0 ? '·' : fmtNum(q));
        if (lastCells.has(key) && lastCells.get(key) !== q) flash(cell);
        return cell;
      }),
    ),
  );
  lastCells = seen;
  fillRows($('#positions tbody'), rows, 'No teams.', columns.length + 4);
}

function renderFeed(feed) {
  const row = (name, label) => {
    const c = feed[name];
    if (!c) return el('tr', { 'data-feed': name }, el('td', {}, label), el('td', { colspan: 6, class: 'muted' }, 'no status from the feed bridge'));
    return el(
      'tr',
      { 'data-feed': name },
      el('td', {}, label),
      el('td', { class: 'num' }, fmtNum(c.datagrams)),
      el('td', { class: `num ${c.gaps ? 'warn' : ''}`, 'data-field': 'gaps' }, fmtNum(c.gaps)),
      el('td', { class: `num ${c.missed_messages ? 'warn' : ''}` }, fmtNum(c.missed_messages)),
      el('td', { class: `num ${c.restarts ? 'warn' : ''}`, 'data-field': 'restarts' }, fmtNum(c.restarts)),
      el('td', { class: `num ${c.bad_datagrams ? 'warn' : ''}`, 'data-field': 'bad_datagrams' }, fmtNum(c.bad_datagrams)),
      el('td', { class: 'num muted' }, fmtNum(c.last_seq)),
    );
  };
  $('#feed tbody').replaceChildren(row('clearing', 'Clearing'), row('market_data', 'Market data'), standbyRow(feed.standby));
}

/** The standby bridge (it keeps the fills sent while the bridge restarts): whether it is there, and what it follows. */
function standbyRow(s) {
  const label = el('td', {}, 'Standby');
  if (!s) return el('tr', { 'data-feed': 'standby' }, label, el('td', { colspan: 6, class: 'muted', 'data-field': 'state' }, 'no standby bridge (a bridge restart loses the fills sent meanwhile)'));
  const state = !s.live ? `silent for ${Math.round(s.age_ms / 1000)} s: a bridge restart now loses the fills sent meanwhile` : s.waiting ? `waiting: ${s.waiting}` : `following session ${s.session}; ${fmtNum(s.published)} fills published`;
  return el(
    'tr',
    { 'data-feed': 'standby' },
    label,
    el('td', { class: 'num' }, fmtNum(s.datagrams)),
    el('td', { class: `num ${s.gaps ? 'warn' : ''}` }, fmtNum(s.gaps)),
    el('td', { colspan: 3, class: `small ${s.live && !s.waiting ? '' : 'warn'}`, 'data-field': 'state' }, state),
    el('td', { class: 'num muted' }, fmtNum(s.last_seq)),
  );
}

/** What the engine, bridge and pricing service say is failing now, each a standing row: teams are served, but something is not being recorded. */
function systemRows(o) {
  const row = (where, badge, ...text) =>
    el('tr', { class: 'alert problem system' }, el('td', {}, ''), el('td', {}, where), el('td', {}, el('span', { class: 'badge rejected' }, badge)), el('td', { class: 'small' }, ...text));
  const rows = [];
  const sb = o.scoreboard_failing;
  if (sb) rows.push(row('engine', 'scoreboard', `not written since ${fmtTime(sb.since)}${sb.shard !== undefined ? ` (shard ${sb.shard})` : ''}: ${sb.error}. NDFEX's scoreboard lacks the conversions since; the engine keeps trying.`));
  const u = o.feed.unstored;
  if (u) rows.push(row('clearing', 'fills not stored', `${fmtNum(u.fills)} fill(s), the oldest ${Math.round(u.oldest_ms / 1000)} s${u.last_error ? ` (${u.last_error})` : ''}: no position moves until they are.`));
  if (o.unread?.length) rows.push(row('engine', 'partial', `the engine did not answer for: ${o.unread.join(', ')} (this page may be missing their conversions or refused roster lines)`));
  // The gateway's own words, as on /health: it alone knows whether this system runs pricing at all.
  for (const p of o.pricing?.problems ?? []) rows.push(row('pricing', !o.pricing.live ? 'not reporting' : o.pricing.phase === 'starting' ? 'starting' : 'failing', p));
  return rows;
}

/** Standing rows first (system, then roster lines the engine refused: fixed in the file, not here), then standing feed problems (with the operator's decisions), then the alerts. */
function renderAlerts(alerts, problems, rosterRefused, system = []) {
  const roster = rosterRefused.map((r) =>
    el(
      'tr',
      { class: 'alert problem roster' },
      el('td', {}, ''),
      el('td', {}, 'roster'),
      el('td', {}, el('span', { class: 'badge rejected' }, r.line === 0 ? 'roster file' : `line ${r.line} refused`)),
      el('td', { class: 'small' }, r.reason, r.line === 0 ? '' : ': as if absent (that team cannot sign in) until the accounts file is fixed'),
    ),
  );
  const standing = problems.map((p) =>
    el(
      'tr',
      { class: `alert problem ${p.kind}` },
      el('td', {}, fmtTime(p.ts)),
      el('td', {}, p.feed),
      el('td', {}, el('span', { class: 'badge rejected' }, `${p.kind}${p.count > 1 ? ` ×${p.count}` : ''}`)),
      el('td', { class: 'small' }, p.detail, ' ', p.actions.map((a) => el('button', { type: 'button', class: 'secondary', 'data-problem': p.id, 'data-action': a }, a))),
    ),
  );
  const rows = alerts.map((a) =>
    el('tr', { class: `alert ${a.kind}` }, el('td', {}, fmtTime(a.ts)), el('td', {}, a.feed), el('td', {}, el('span', { class: 'badge rejected' }, a.kind)), el('td', { class: 'small' }, a.detail)),
  );
  fillRows($('#alerts tbody'), [...system, ...roster, ...standing, ...rows], 'No alerts since the gateway started.', 4);
}

$('#alerts').addEventListener('click', async (e) => {
  const b = e.target.closest('button[data-problem]');
  if (!b) return;
  const { problem: id, action } = b.dataset;
  const [path, body] = action === 'ack' ? ['feed/ack', { id }] : ['feed/verdict', { id, decision: action }];
  b.disabled = true;
  const res = await fetch(`/operator/api/${path}`, { method: 'POST', headers: { authorization: auth, 'content-type': 'application/json' }, body: JSON.stringify(body) });
  if (!res.ok) alert((await readJson(res)).error?.message ?? `HTTP ${res.status}`);
  await refresh();
});

function renderConversions(list) {
  const rows = list.map((c) =>
    el(
      'tr',
      { 'data-request': c.request_id },
      el('td', { class: 'mono' }, c.request_id),
      el('td', {}, fmtTime(c.ts)),
      el('td', {}, c.username),
      el('td', {}, c.kind),
      el('td', {}, c.etf ?? '—'),
      el('td', { class: 'num' }, c.amount ?? '—'),
      el('td', {}, el('span', { class: `badge ${c.status}` }, c.status)),
      el(
        'td',
        { class: 'small', title: c.error?.message },
        c.status === 'accepted' ? (c.deltas ?? []).filter((d) => d.ticker === c.etf).map((d) => `${c.etf} ${fmtSigned(d.quantity)}`).join('') : (c.error?.code ?? ''),
      ),
    ),
  );
  fillRows($('#conversions tbody'), rows, 'No conversions yet.', 8);
}

// ---------------------------------------------------------------- the class: every team's P&L over time

let classCharts = null;
const classPnl = pnlChart($('#pnl-chart'), { height: 360 });

function startClassCharts() {
  classCharts?.stop();
  classCharts = followCharts({}, (data) => classPnl.update(data));
}
