// A team's page: sign in, live holdings and ETF prices over /ws, create/redeem, recent history.
import { $, el, basicAuth, fmtNum, fmtPct, fmtSigned, fmtTime, signClass, readJson, fillRows, flash } from './common.js';
import { followCharts, pnlChart, priceChart } from './charts.js';

const HISTORY_ROWS = 15;
/** Conversions read for the chart's markers and the scorecard (the table shows HISTORY_ROWS). */
const HISTORY_READ = 200;
const RECONNECT_MS = 1000;

let creds = null; // {username, password}: kept in this page's memory only
let ws = null;
let seq = -1; // last holdings seq applied: a reconnect resumes from it
let holdings = new Map(); // ticker -> quantity
let order = new Map(); // ticker -> symbol id, for a stable row order
const prices = new Map(); // ETF -> EtfPrice
let etfs = [];

function setLive(state, text) {
  $('#live-dot').dataset.state = state;
  $('#live-text').textContent = text;
}

// ---------------------------------------------------------------- sign in / out

$('#signin-form').addEventListener('submit', (e) => {
  e.preventDefault();
  const username = $('#username').value.trim();
  const password = $('#password').value;
  if (!username || !password) return;
  $('#signin-error').hidden = true;
  $('#signin-button').disabled = true;
  creds = { username, password };
  seq = -1;
  connect();
});

$('#sign-out').addEventListener('click', () => signOut());

function signOut(message) {
  creds = null;
  seq = -1;
  holdings = new Map();
  lastReset = null;
  if (ws) {
    const old = ws;
    ws = null;
    old.close(1000, 'signed out');
  }
  stopCharts();
  $('#desk').hidden = true;
  $('#who').hidden = true;
  $('#signin').hidden = false;
  $('#signin-button').disabled = false;
  $('#password').value = '';
  const err = $('#signin-error');
  err.hidden = !message;
  err.textContent = message ?? '';
}

function showDesk(welcome) {
  $('#signin').hidden = true;
  $('#desk').hidden = false;
  $('#who').hidden = false;
  $('#who-name').textContent = welcome.username;
  $('#who-id').textContent = `client ${welcome.client_id}`;
  $('#signin-button').disabled = false;
  void loadEtfs();
  void loadHistory();
  startCharts(welcome.username);
}

// ---------------------------------------------------------------- the stream

function connect() {
  const proto = location.protocol === 'https:' ? 'wss' : 'ws';
  const socket = new WebSocket(`${proto}://${location.host}/ws`);
  ws = socket;
  setLive('connecting', 'connecting…');
  socket.addEventListener('open', () => {
    socket.send(JSON.stringify({ type: 'auth', username: creds.username, password: creds.password, ...(seq >= 0 ? { resume_from: seq } : {}) }));
    socket.send(JSON.stringify({ type: 'subscribe', prices: ['*'], requests: true }));
  });
  socket.addEventListener('message', (ev) => {
    if (ws !== socket) return;
    onMessage(JSON.parse(ev.data));
  });
  socket.addEventListener('close', (ev) => {
    if (ws !== socket) return; // signed out, or replaced
    ws = null;
    if (ev.code === 4001) return signOut(ev.reason === 'authentication failed' ? 'Wrong username or password.' : `Refused: ${ev.reason}`);
    if (ev.code === 4029) {
      // The login throttle (too many failed sign-ins from this host or for this name): the password was not checked, and
      // asking sooner than it says is refused again and counts as another attempt.
      const wait = Math.min(120, Number(/retry after (\d+) s$/.exec(ev.reason)?.[1] ?? 5));
      if ($('#desk').hidden) return signOut(`Too many sign-in attempts: try again in ${wait} s.`);
      setLive('down', `too many sign-in attempts: retrying in ${wait} s`);
      setTimeout(() => creds && !ws && connect(), wait * 1000);
      return;
    }
    setLive('down', 'reconnecting…');
    setTimeout(() => creds && !ws && connect(), RECONNECT_MS);
  });
}

function onMessage(m) {
  switch (m.type) {
    case 'welcome':
      showDesk(m);
      setLive('live', 'live');
      break;
    case 'snapshot':
      // A gateway from before last_reset sends none: a reset heard live is kept rather than forgotten.
      if ('last_reset' in m) setLastReset(m.last_reset);
      setHoldings(m.positions, m.seq, false);
      setMoney(m);
      break;
    case 'resumed':
      setLive('live', 'live');
      break;
    case 'delta':
      if (m.seq !== seq + 1) {
        ws?.send(JSON.stringify({ type: 'snapshot' })); // missed one: start over from a snapshot
        return;
      }
      // Before the P&L of the change: the split must start again at the same moment the P&L does.
      if (m.cause === 'session_reset') setLastReset(m.last_reset ?? { ts: m.ts });
      setHoldings(m.positions, m.seq, true, m.deltas);
      setMoney(m);
      if (m.cause === 'fill' && legsOpen()) historySoon(); // a sell may be a conversion's leg: the scorecard follows
      break;
    case 'price':
      prices.set(m.price.etf, m.price);
      renderPrice(m.price);
      break;
    case 'request':
      historySoon();
      break;
    case 'error':
      console.warn('stream error', m.code, m.message);
      break;
  }
}

// ---------------------------------------------------------------- holdings

/** Cash and P&L (cash plus positions at mid prices) as the stream last gave them. */
function setMoney(m) {
  $('#cash').textContent = fmtNum(m.cash);
  $('#cash').className = signClass(m.cash ?? 0);
  $('#pnl').textContent = m.pnl ? fmtSigned(m.pnl.total) : '—';
  $('#pnl').className = signClass(m.pnl?.total ?? 0);
  lastPnl = m.pnl ? m.pnl.total : null;
  showPnlSplit();
  const notes = [];
  if (m.pnl?.unmarked?.length) notes.push(`not marked (no market): ${m.pnl.unmarked.join(', ')}`);
  if (m.pnl?.stale?.length) notes.push(`at the last two-sided mid (one-sided book): ${m.pnl.stale.map((s) => `${s.ticker} ${Math.round(s.age_ms / 1000)} s old`).join(', ')}`);
  $('#pnl').title = ['cash + positions at mid prices', ...notes].join('; ');
}

function setHoldings(positions, newSeq, isDelta, deltas = []) {
  const next = new Map();
  for (const p of positions) {
    order.set(p.ticker, p.symbol);
    if (p.quantity !== 0) next.set(p.ticker, p.quantity);
  }
  holdings = next;
  seq = newSeq;
  $('#holdings-seq').textContent = `seq ${seq}`;
  renderHoldings(isDelta ? new Set(deltas.map((d) => d.ticker)) : new Set());
}

function renderHoldings(changed) {
  const tickers = [...holdings.keys()].sort((a, b) => (order.get(a) ?? 1e9) - (order.get(b) ?? 1e9) || a.localeCompare(b));
  const rows = tickers.map((t) => {
    const q = holdings.get(t);
    const cell = el('td', { class: `num qty ${signClass(q)}` }, fmtNum(q));
    if (changed.has(t)) flash(cell);
    return el('tr', { 'data-ticker': t }, el('td', {}, t), cell);
  });
  fillRows($('#holdings tbody'), rows, 'No positions yet: buy the basket on the exchange.', 2);
}

// ---------------------------------------------------------------- prices

async function loadEtfs() {
  const res = await fetch('/etfs');
  const body = await readJson(res);
  if (!res.ok) return;
  etfs = body.etfs;
  const select = $('#etf');
  const current = select.value;
  select.replaceChildren(...etfs.map((e) => el('option', { value: e.name }, e.name)));
  if (current) select.value = current;
  for (const e of etfs) if (e.price && !prices.has(e.name)) prices.set(e.name, e.price);
  renderAllPrices();
  showBasket();
}

function renderAllPrices() {
  const names = [...new Set([...etfs.map((e) => e.name), ...prices.keys()])];
  fillRows($('#prices tbody'), names.map((n) => priceRow(n, prices.get(n))), 'No ETFs configured.', 9);
}

function priceRow(name, p) {
  const cells = p
    ? [
        el('td', { class: 'num', 'data-field': 'nav' }, fmtNum(p.nav)),
        el('td', { class: 'num', 'data-field': 'create_cost' }, fmtNum(p.create_cost)),
        el('td', { class: 'num', 'data-field': 'redeem_proceeds' }, fmtNum(p.redeem_proceeds)),
        el('td', { class: 'num' }, fmtNum(p.etf_bid)),
        el('td', { class: 'num' }, fmtNum(p.etf_ask)),
        el('td', { class: `num ${signClass(p.premium)}`, 'data-field': 'premium' }, fmtPct(p.premium)),
        el('td', { class: `num ${signClass(p.create_edge)}` }, fmtSigned(p.create_edge)),
        el('td', { class: `num ${signClass(p.redeem_edge)}` }, fmtSigned(p.redeem_edge)),
      ]
    : [el('td', { colspan: 8, class: 'muted' }, 'waiting for the first price…')];
  return el('tr', { 'data-etf': name }, el('td', {}, el('strong', {}, name)), ...cells);
}

function renderPrice(p) {
  $('#prices-at').textContent = `updated ${fmtTime(p.ts)}`;
  const tbody = $('#prices tbody');
  const old = tbody.querySelector(`tr[data-etf="${CSS.escape(p.etf)}"]`);
  if (old) old.replaceWith(priceRow(p.etf, p));
  else renderAllPrices();
}

function showBasket() {
  const e = etfs.find((x) => x.name === $('#etf').value);
  $('#basket-line').textContent = e ? `1 ${e.name} = ${e.components.map((c) => `${c.weight}×${c.ticker}`).join(' + ')}` : '';
}
$('#etf').addEventListener('change', () => {
  showBasket();
  drawCharts();
});

// ---------------------------------------------------------------- create / redeem

$('#convert-form').addEventListener('submit', async (e) => {
  e.preventDefault();
  const op = e.submitter?.value === 'redeem' ? 'redeem' : 'create';
  const etf_name = $('#etf').value || undefined;
  const amountText = $('#amount').value.trim();
  const amount = /^[0-9]+$/.test(amountText) ? Number(amountText) : amountText;
  const dry_run = $('#dry-run').checked || undefined;
  const buttons = [$('#create-button'), $('#redeem-button')];
  buttons.forEach((b) => (b.disabled = true));
  try {
    const res = await fetch(`/${op}`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: basicAuth(creds.username, creds.password) },
      body: JSON.stringify({ etf_name, amount, dry_run }),
    });
    showAnswer(op, res.status, await readJson(res));
  } catch (err) {
    showAnswer(op, 0, { error: { code: 'network', message: `no answer: ${err.message}` } });
  } finally {
    buttons.forEach((b) => (b.disabled = false));
  }
  void loadHistory();
  charts?.now();
});

function showAnswer(op, status, body) {
  const box = $('#answer');
  box.hidden = false;
  if (body.error) {
    box.dataset.status = 'error';
    const shortfalls = body.error.shortfalls ?? [];
    // Only the parts there are: a refusal without shortfalls (a halt, a limit) has no list.
    const parts = [
      el('div', { class: 'headline' }, `${op === 'create' ? 'Create' : 'Redeem'} refused`, el('span', { class: 'muted small' }, ` ${status} ${body.error.code}`)),
      el('div', { class: 'message' }, body.error.message),
    ];
    if (shortfalls.length) parts.push(el('ul', { class: 'shortfalls' }, shortfalls.map((s) => el('li', {}, `${s.ticker}: have ${fmtNum(s.have)}, need ${fmtNum(s.need)}`))));
    box.replaceChildren(...parts);
    return;
  }
  box.dataset.status = body.dry_run ? 'dry' : 'ok';
  const verb = body.dry_run ? (body.op === 'create' ? 'Would create' : 'Would redeem') : body.op === 'create' ? 'Created' : 'Redeemed';
  box.replaceChildren(
    el('div', { class: 'headline' }, `${verb} ${body.amount} ${body.etf_name}`, el('span', { class: 'muted small' }, body.dry_run ? ' dry run: nothing changed' : ` ${body.request_id}${body.replayed ? ' (replayed)' : ''}`)),
    el(
      'div',
      { class: 'deltas' },
      Object.entries(body.deltas).map(([t, q]) => el('span', { class: `chip ${signClass(q)}` }, `${t} ${fmtSigned(q)}`)),
      el('span', { class: 'chip' }, `fee ${fmtNum(body.fee ?? 0)}`),
    ),
  );
}

// ---------------------------------------------------------------- history

let historyTimer = null;
/** A bot's burst of outcomes costs one /history read, not one per outcome. */
function historySoon() {
  if (historyTimer) return;
  historyTimer = setTimeout(() => {
    historyTimer = null;
    void loadHistory();
  }, 250);
}

async function loadHistory() {
  if (!creds) return;
  const res = await fetch(`/history?limit=${HISTORY_READ}`, { headers: { authorization: basicAuth(creds.username, creds.password) } });
  if (!res.ok) return;
  const body = await readJson(res);
  setConversions(body.entries);
  const rows = body.entries.slice(0, HISTORY_ROWS).map((h) =>
    el(
      'tr',
      { 'data-request': h.request_id },
      el('td', { class: 'mono' }, h.request_id),
      el('td', {}, fmtTime(h.ts)),
      el('td', {}, h.kind),
      el('td', {}, h.etf ?? '—'),
      el('td', { class: 'num' }, h.amount ?? '—'),
      el('td', {}, el('span', { class: `badge ${h.status}` }, h.status)),
      el('td', { class: 'num', 'data-field': 'fee' }, h.status === 'accepted' && h.kind !== 'register' ? fmtNum(h.fee ?? 0) : '—'),
      el('td', { class: 'small' }, h.status === 'accepted' ? Object.entries(h.deltas_by_ticker ?? {}).map(([t, q]) => `${t} ${fmtSigned(q)}`).join(', ') || '—' : h.error?.message ?? ''),
    ),
  );
  fillRows($('#history tbody'), rows, 'No requests yet.', 8);
}

// ---------------------------------------------------------------- charts, halts, scorecard

let charts = null; // followCharts(): the session's points from GET /charts, then new ones
let conversions = []; // accepted conversions (newest first), for the markers and the scorecard
const priceView = priceChart($('#price-chart'), { markers: () => markers() });
const pnlView = pnlChart($('#pnl-chart'), { legend: false });

function startCharts(username) {
  stopCharts();
  charts = followCharts({ team: username }, (data) => {
    showHalts(data.halts);
    drawCharts();
  });
}

function stopCharts() {
  charts?.stop();
  charts = null;
  showHalts([]);
}

function drawCharts() {
  if (!charts) return;
  const etf = $('#etf').value || charts.data.etfs.keys().next().value;
  priceView.update(charts.data, etf);
  pnlView.update(charts.data);
}

/** The selected ETF's conversions of this team, where the chart draws them: at the ETF's mid then. */
function markers() {
  const etf = $('#etf').value;
  const d = charts?.data;
  return conversions
    .filter((c) => c.etf === etf)
    .map((c) => ({ ts: c.ts, op: c.kind, price: c.scorecard?.etf_mid ?? midAt(d, etf, c.ts) }));
}

/** The ETF mid of the last point at or before `ts` (the first after it when none). */
function midAt(d, etf, ts) {
  const s = d?.etfs.get(etf);
  if (!s) return null;
  let best = null;
  for (let i = 0; i < d.t.length; i++) {
    if (s.etf[i] === null) continue;
    if (d.t[i] > ts && best !== null) break;
    best = s.etf[i];
  }
  return best;
}

// Legs from before a reset went with it: the desk no longer matches sells to them.
const legsOpen = () => conversions.some((c) => c.scorecard && c.scorecard.legs_sold < 1 && sinceReset(c));

/** How long after a conversion its scorecard is waited for: the desk scores it as its outcome comes, or marks it missed seconds later. */
const CARD_WAIT_MS = 60_000;
let cardTimer = null;

function setConversions(entries) {
  conversions = entries.filter((h) => h.status === 'accepted' && (h.kind === 'create' || h.kind === 'redeem'));
  priceView.redraw();
  renderScorecard();
  // A recent conversion without its card yet: read again, so that it shows once written, not at the next request.
  if (!cardTimer && conversions.some((c) => !c.scorecard && Date.now() - c.ts < CARD_WAIT_MS)) {
    cardTimer = setTimeout(() => {
      cardTimer = null;
      historySoon();
    }, 1000);
  }
}

/**
 * The last exchange reset ({ts, last_request_id}, or null): it started the cash, the positions and so the P&L again
 * from 0, and took with it what the conversions before it had earned.
 */
let lastReset = null;

function setLastReset(r) {
  lastReset = r ?? null;
  renderScorecard();
}

/** Hours and minutes: the reset is named by when it was, the date in its title. */
const fmtClock = (ms) => new Date(ms).toLocaleTimeString(undefined, { hour: '2-digit', minute: '2-digit', hour12: false });
const requestNumber = (id) => (id ? Number(id.slice(1)) : 0);

/**
 * Whether a conversion was decided after the last reset. By request id: the engine numbers requests in the order it
 * applies them among fills and resets, where a conversion decided just before the reset may carry a later time. An
 * engine from before last_request_id gives only the reset's time in its delta.
 */
function sinceReset(c) {
  if (!lastReset) return true;
  if (lastReset.last_request_id !== undefined) return requestNumber(c.request_id) > requestNumber(lastReset.last_request_id);
  return c.ts > lastReset.ts;
}

/** Why a conversion's edge is not known: none at its moment (the desk heard of it late), or a leg without a market then. */
function whyUnscored(s) {
  if (s.unscored === 'missed') return 'not scored: the pricing service heard of it only after its moment (it was stopped, restarting or cut off), so the mids of that moment are unknown; its fee and legs sold are counted';
  if (s.unscored) return `not scored (${s.unscored})`;
  return s.unmarked ? `no market for ${s.unmarked.join(', ')}` : '';
}

function renderScorecard() {
  let total = 0;
  let counted = 0;
  unscoredNow = 0;
  const restarted = lastReset ? `the exchange restarted at ${fmtClock(lastReset.ts)}` : '';
  const rows = conversions.map((c) => {
    const s = c.scorecard;
    const current = sinceReset(c);
    if (current && s?.edge !== null && s?.edge !== undefined) {
      total += s.edge;
      counted++;
    } else if (current && s) unscoredNow++;
    return el(
      'tr',
      { 'data-request': c.request_id, class: current ? undefined : 'before-reset', title: current ? undefined : `before ${restarted}: what it earned went with the reset, and is not in the P&L since` },
      el('td', {}, fmtTime(c.ts)),
      el('td', {}, c.kind),
      el('td', {}, c.etf),
      el('td', { class: 'num' }, c.amount),
      el('td', { class: 'num' }, fmtNum(s?.etf_mid)),
      el('td', { class: 'num' }, fmtNum(c.fee ?? 0)),
      el('td', { class: `num ${signClass(s?.edge)}`, 'data-field': 'edge', title: s ? whyUnscored(s) : '' }, s?.unscored ? 'not scored' : s ? fmtSigned(s.edge) : '—'),
      el('td', { class: `num ${signClass(s?.quoted_edge)}` }, s ? fmtSigned(s.quoted_edge) : '—'),
      el('td', { class: 'num', 'data-field': 'legs' }, s ? `${Math.round(s.legs_sold * 100)}%` : '—'),
    );
  });
  fillRows($('#scorecard tbody'), rows, 'No conversions yet: each one is scored here.', 9);
  // After a reset the conversions listed from before it earned this session nothing: 0, not unknown. One not scored
  // counts 0 at mid, the split saying so: what it earned is in the rest.
  scoredEdge = counted || unscoredNow || (lastReset && conversions.length) ? total : null;
  $('#scorecard-total').textContent = fmtSigned(scoredEdge);
  $('#scorecard-total').className = `num ${signClass(total)}`;
  $('#scorecard-total-label').textContent = lastReset ? `Total since ${restarted}` : 'Total';
  $('#scorecard-total-label').title = lastReset ? new Date(lastReset.ts).toLocaleString() : '';
  showPnlSplit();
}

let scoredEdge = null; // the scorecard's total, for the P&L split
let unscoredNow = 0; // conversions of the split's session whose card has no edge: what they earned is in "the rest"
let lastPnl = null; // the stream's last P&L total

/**
 * The P&L in two parts: what conversions earned at mid, and the rest (trading the legs, marks moving). Both of the
 * session since the last exchange reset, where the P&L started again from 0.
 */
function showPnlSplit() {
  const p = $('#pnl-split');
  if (scoredEdge === null || lastPnl === null) return void (p.textContent = '');
  const since = lastReset ? `, since the exchange restarted at ${fmtClock(lastReset.ts)}` : '';
  p.replaceChildren(
    'P&L ',
    el('strong', { class: signClass(lastPnl) }, fmtSigned(lastPnl)),
    ' = conversions at mid ',
    el('strong', { class: signClass(scoredEdge) }, fmtSigned(scoredEdge)),
    ' + the rest (trading, marks moving) ',
    el('strong', { class: signClass(lastPnl - scoredEdge) }, fmtSigned(lastPnl - scoredEdge)),
    ` (the last ${HISTORY_READ} requests${since}${unscoredNow ? `; ${unscoredNow} conversion${unscoredNow > 1 ? 's' : ''} not scored: what ${unscoredNow > 1 ? 'they' : 'it'} earned at mid is in the rest` : ''}).`,
  );
}

/** A halt shows as soon as the gateway reads it (GET /charts), not only when a conversion is refused. */
function showHalts(halts) {
  const banner = $('#halt-banner');
  banner.hidden = !halts.length;
  banner.textContent = halts.map((h) => `Conversions of ${h.etf ?? 'every ETF'} are halted${h.reason ? `: ${h.reason}` : ''} (since ${fmtTime(h.since)}).`).join(' ');
}

/**
 * Says when positions may be incomplete or not current: /health lists the feed's
 * standing problems (fills missed, an exchange session not decided yet) until
 * the operator acknowledges them.
 */
const HEALTH_MS = 5000;
async function checkFeed() {
  try {
    const h = await (await fetch('/health')).json();
    const p = h.feed?.problems ?? [];
    const why = p.some((x) => x.kind === 'verdict_pending')
      ? 'An exchange session change is being checked: new fills are held until it is decided.'
      : p.some((x) => x.kind === 'gap' || x.kind === 'late_join' || x.kind === 'conflict' || x.kind === 'held_store')
        ? 'Some exchange fills were missed or disputed: your positions may be incomplete. The operator has been alerted.'
        : h.feed && !h.feed.exchange_live
          ? 'No data from the exchange right now: positions may not be current.'
          : '';
    $('#incomplete').textContent = why;
    $('#incomplete').hidden = !why;
  } catch {
    /* the stream's own indicator shows the gateway unreachable */
  }
}
setInterval(() => void checkFeed(), HEALTH_MS);
void checkFeed();

