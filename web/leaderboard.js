// GET /leaderboard as a table: the operator page and the board page share it.
import { el, fmtNum, fmtSigned, signClass, readJson, fillRows } from './common.js';

/** Fills `tbody` with every team, best P&L first. */
export async function loadLeaderboard(tbody) {
  let body;
  try {
    const res = await fetch('/leaderboard');
    body = await readJson(res);
    if (!res.ok) return;
  } catch {
    return;
  }
  const rows = body.teams.map((t) =>
    el(
      'tr',
      { 'data-team': t.username },
      el('td', { class: 'rank' }, t.rank),
      el('td', {}, el('strong', {}, t.username)),
      el('td', { class: `num ${signClass(t.total)}`, 'data-field': 'total' }, fmtSigned(t.total)),
      el('td', { class: 'num' }, fmtNum(t.cash)),
      el('td', { class: 'num', title: t.unmarked.length ? `not marked (no market): ${t.unmarked.join(', ')}` : '' }, fmtNum(t.marked)),
    ),
  );
  fillRows(tbody, rows, 'No teams yet.', 5);
}
