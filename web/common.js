// Small helpers shared by the team page and the operator page (plain ES module, no build step).

/** Builds an element: el('td', {class: 'num'}, '42'). Text children are escaped by construction. */
export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k === 'class') node.className = v;
    else if (k.startsWith('on') && typeof v === 'function') node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v === true ? '' : String(v));
  }
  for (const c of children.flat()) {
    if (c === undefined || c === null || c === false) continue;
    node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return node;
}

export const $ = (sel, root = document) => root.querySelector(sel);

export function basicAuth(username, password) {
  const bytes = new TextEncoder().encode(`${username}:${password}`);
  let bin = '';
  for (const b of bytes) bin += String.fromCharCode(b);
  return `Basic ${btoa(bin)}`;
}

const num = new Intl.NumberFormat(undefined, { maximumFractionDigits: 2 });
/** A price or quantity; '—' where the figure is unknown (a book side is empty). */
export const fmtNum = (v) => (v === null || v === undefined || Number.isNaN(v) ? '—' : num.format(v));
export const fmtSigned = (v) => (v === null || v === undefined ? '—' : `${v > 0 ? '+' : ''}${num.format(v)}`);
/** A ratio as a percentage with two decimals: 0.0012 → "+0.12%". */
export const fmtPct = (v) => (v === null || v === undefined ? '—' : `${v > 0 ? '+' : ''}${(v * 100).toFixed(2)}%`);
export const fmtTime = (ms) => (ms ? new Date(ms).toLocaleTimeString(undefined, { hour12: false }) : '—');
export const signClass = (v) => (v > 0 ? 'pos' : v < 0 ? 'neg' : '');

/** Reads a JSON answer; a non-JSON answer (a proxy's error page) becomes an error shaped like the API's. */
export async function readJson(res) {
  const text = await res.text();
  try {
    return JSON.parse(text);
  } catch {
    return { error: { code: 'bad_response', message: `HTTP ${res.status}: ${text.slice(0, 120)}` } };
  }
}

/** Replaces a table body's rows; an empty list shows `empty` across the table. */
export function fillRows(tbody, rows, empty, columns) {
  tbody.replaceChildren(...(rows.length ? rows : [el('tr', { class: 'empty' }, el('td', { colspan: columns }, empty))]));
}

/** Marks a cell whose value changed, so the eye catches it; the class drops after the animation. */
export function flash(node) {
  node.classList.remove('flash');
  void node.offsetWidth; // restart the animation
  node.classList.add('flash');
}
