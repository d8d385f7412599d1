import { appendFile, open, readFile, rename, truncate, writeFile, mkdir } from 'node:fs/promises';
import { dirname } from 'node:path';
import type { NatsConnection } from '@nats-io/transport-node';
import type { JournalEvent } from '../../proto/journal.js';
import { replayJournal } from './journal.js';

/** One line per affected account and symbol: `<unix_ns> <op> <client_id> <symbol> <delta>`, the format NDFEX's scoreboard reads. */
export function scoreboardLines(events: readonly JournalEvent[]): string {
  let out = '';
  for (const ev of events) {
    if (ev.t !== 'conversion') continue;
    const ns = `${BigInt(ev.ts) * 1_000_000n}`;
    for (const [symbol, delta] of ev.deltas) out += `${ns} ${ev.op} ${ev.clientId} ${symbol} ${delta}\n`;
  }
  return out;
}

interface Position {
  /** Journal sequence whose lines are the last in the file. */
  seq: number;
  /** File length after those lines: anything past it is a torn append, cut at start-up. */
  bytes: number;
}

/**
 * Appends every accepted conversion to the exchange's scoreboard file, exactly
 * once across crashes: a side file records (journal seq, file length) after
 * each append; at start the file is cut back to that length and the journal
 * after that seq is appended again.
 */
export class ScoreboardWriter {
  private chain: Promise<void> = Promise.resolve();
  private pos: Position = { seq: 0, bytes: 0 };

  constructor(
    private readonly path: string,
    private readonly onError: (err: unknown) => void,
  ) {}

  private get posPath(): string {
    return `${this.path}.pos`;
  }

  /** Starts the catch-up in the background; live appends queue behind it, so start-up does not wait for it. */
  startCatchUp(nc: NatsConnection, journalSeq: number): void {
    this.chain = this.catchUp(nc, journalSeq).catch(this.onError);
  }

  private async catchUp(nc: NatsConnection, journalSeq: number): Promise<void> {
    await mkdir(dirname(this.path), { recursive: true });
    try {
      this.pos = JSON.parse(await readFile(this.posPath, 'utf8')) as Position;
    } catch {
      this.pos = { seq: 0, bytes: 0 };
    }
    const fh = await open(this.path, 'a');
    const size = (await fh.stat()).size;
    await fh.close();
    if (size > this.pos.bytes) await truncate(this.path, this.pos.bytes);
    if (size < this.pos.bytes) this.pos.bytes = size; // edited by hand: keep what is there
    if (this.pos.seq >= journalSeq) return;
    let text = '';
    await replayJournal(nc, this.pos.seq + 1, (events) => (text += scoreboardLines(events)), journalSeq);
    await this.write(text, journalSeq);
  }

  /** Queues the lines of a durable journal batch; appends happen in journal order. */
  append(events: readonly JournalEvent[], journalSeq: number): void {
    const text = scoreboardLines(events);
    this.chain = this.chain.then(() => this.write(text, journalSeq)).catch(this.onError);
  }

  flush(): Promise<void> {
    return this.chain;
  }

  private async write(text: string, seq: number): Promise<void> {
    if (text) await appendFile(this.path, text);
    this.pos = { seq, bytes: this.pos.bytes + Buffer.byteLength(text) };
    await writeFile(`${this.posPath}.tmp`, JSON.stringify(this.pos));
    await rename(`${this.posPath}.tmp`, this.posPath);
  }
}
