// The leaderboard's page (/board): every team's P&L over time and the ranking, for a projector.
import { $, fmtTime } from './common.js';
import { followCharts, pnlChart } from './charts.js';
import { loadLeaderboard } from './leaderboard.js';

const REFRESH_MS = 2000;
const chart = pnlChart($('#pnl-chart'), { height: 420 });

followCharts({}, (data) => {
  chart.update(data);
  $('#live-dot').dataset.state = 'live';
  $('#live-text').textContent = `updated ${fmtTime(Date.now())}`;
});

async function refresh() {
  await loadLeaderboard($('#leaderboard tbody'));
  setTimeout(refresh, REFRESH_MS);
}
void refresh();
