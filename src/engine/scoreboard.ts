import { mkdir, open, readFile, type FileHandle } from 'node:fs/promises';
import { dirname } from 'node:path';
import type { NatsConnection } from '@nats-io/transport-node';
import type { JournalEvent } from '../../proto/journal.js';
import type { FlatPositions } from '../../proto/engine.js';
import { replayJournal } from './journal.js';

/**
 * A conversion's deltas, flat (`[symbol, delta, ...]`; compact journal records
 * name their basket version instead: see Catalog). The engine's lists are
 * shared and frozen per basket version and amount (catalog.ts answerDeltas).
 */
export type DeltasOf = (ev: Extract<JournalEvent, { t: 'conversion' }>) => FlatPositions;

/**
 * The `<symbol> <delta>\n` ends of a delta list's lines, kept for frozen
 * lists: every conversion of one basket version and amount shares them, so
 * their numbers are not turned into text again per conversion.
 */
const tailsOf = new WeakMap<FlatPositions, string[]>();

function lineTails(deltas: FlatPositions): string[] {
  const kept = tailsOf.get(deltas);
  if (kept) return kept;
  const tails: string[] = [];
  for (let i = 0; i + 1 < deltas.length; i += 2) tails.push(`${deltas[i]} ${deltas[i + 1]}\n`);
  if (Object.isFrozen(deltas)) tailsOf.set(deltas, tails);
  return tails;
}

/** One line per affected account and symbol: `<unix_ns> <op> <client_id> <symbol> <delta>`, the format NDFEX's scoreboard reads. */
export function scoreboardLines(events: readonly JournalEvent[], deltasOf: DeltasOf): string {
  // Pieces gathered and joined once: a string grown line by line is a rope that the file write must flatten (a tenth of the engine under load).
  // A conversion's lines are its head before each kept tail: head + tails joined by head.
  const parts: string[] = [];
  for (const ev of events) {
    if (ev.t !== 'conversion') continue;
    const tails = lineTails(deltasOf(ev));
    if (tails.length === 0) continue;
    const head = `${nanos(ev.ts)} ${ev.op} ${ev.clientId} `;
    parts.push(head, tails.join(head));
  }
  return parts.join('');
}

/** Whole milliseconds (Date.now()) as nanoseconds, exactly: six zeros appended, no BigInt per event. */
const nanos = (ms: number): string => (ms === 0 ? '0' : Number.isSafeInteger(ms) ? `${ms}000000` : `${BigInt(Math.trunc(ms)) * 1_000_000n}`);

interface Position {
  /** Journal sequence whose lines are the last in the file. */
  seq: number;
  /** File length after those lines: anything past it is a torn append, cut at start-up. */
  bytes: number;
}

/** The position record is rewritten in place at a fixed width: one small write, no rename, per batch. */
const POSITION_WIDTH = 64;

/**
 * Live appends go out at most this often. Each is two writes through libuv's
 * thread pool (lines, then position); one per group commit cost the engine
 * about a tenth of its CPU under load, and the scoreboard reads far less often.
 */
const APPEND_EVERY_MS = 25;

/** After a failed append, its lines are tried again this much later (with everything queued since). */
const RETRY_MS = 1_000;

/** An append whose lines did not reach the file: they are kept and written again. */
class LinesNotWritten extends Error {
  constructor(override readonly cause: unknown) {
    super(`scoreboard lines not written: ${String((cause as Error)?.message ?? cause)}`);
    this.name = 'LinesNotWritten';
  }
}

/** A failed catch-up is tried again after RETRY_MS, doubling up to this. */
const CATCH_UP_RETRY_MAX_MS = 30_000;
/** Lines queued behind a failing catch-up at most; past it they are left to the journal (the catch-up's reach grows). */
const MAX_PENDING_BYTES = 32 * 1024 * 1024;

/** Journal batches (of up to 2,000 events each) read and written per step of a catch-up. */
const CATCH_UP_WINDOW = 200;

/**
 * Appends every accepted conversion to the exchange's scoreboard file, exactly
 * once across crashes: a side file records (journal seq, file length) after
 * each append; at start the file is cut back to that length and the journal
 * after that seq is appended again. Both files stay open, and batches that
 * arrive while a write is in progress are written together.
 */
export class ScoreboardWriter {
  private pos: Position = { seq: 0, bytes: 0 };
  private file?: FileHandle;
  private posFile?: FileHandle;
  private ready = false;
  /** Catch-ups failed in a row, and the retry waiting. */
  private catchUpFailures = 0;
  private catchUpTimer: NodeJS.Timeout | null = null;
  /** Appends dropped while a catch-up kept failing: the next catch-up goes as far as this journal seq. */
  private catchUpTo = 0;
  private pendingBytes = 0;
  /** Each durable batch's lines, joined once when written. */
  private pendingText: string[] = [];
  private pendingSeq = 0;
  private writing: Promise<void> | null = null;
  private lastAppendAt = 0;
  /** The next append, held back until APPEND_EVERY_MS after the last. */
  private timer: NodeJS.Timeout | null = null;
  /** close() was called: a catch-up stops after the window it is in (the next start goes on from the position file). */
  private closing = false;
  /** A write of lines failed: the file may hold part of them past the position. */
  private torn = false;
  /** An append or catch-up failed and none has succeeded since. */
  private failing = false;

  constructor(
    private readonly path: string,
    private readonly onError: (err: unknown) => void,
    /** Resolves compact records' deltas: the engine's catalog, which knows every version journaled up to now. */
    private readonly deltasOf: DeltasOf,
    /** A write succeeded after failures: what onError raised (a /health problem) can be lifted. */
    private readonly onRecovered: () => void = () => {},
  ) {}

  private failed(err: unknown): void {
    this.failing = true;
    this.onError(err);
  }

  private succeeded(): void {
    if (!this.failing) return;
    this.failing = false;
    this.onRecovered();
  }

  /** Starts the catch-up in the background; live appends queue behind it, so start-up does not wait for it. */
  /** `stream`: the engine shard's journal (proto/shards.ts). */
  startCatchUp(nc: NatsConnection, journalSeq: number, stream?: string): void {
    let further = false;
    this.writing = this.catchUp(nc, Math.max(journalSeq, this.catchUpTo), stream)
      .then((complete) => {
        this.catchUpFailures = 0;
        // A catch-up with nothing to write (an empty journal) writes no line, yet the files opened: that is recovery too.
        if (complete) this.succeeded();
        // Appends were left to the journal while this ran (too many queued): those lines are caught up too, first.
        further = complete && this.catchUpTo > this.pos.seq;
        this.ready = complete && !further;
      })
      .catch((err: unknown) => {
        // Tried again after a pause, live appends queuing meanwhile: given up, every conversion of the rest of the
        // engine's run missed the file (a journal read timing out once during a cluster election was enough).
        this.failed(err);
        if (this.closing) return;
        const wait = Math.min(CATCH_UP_RETRY_MAX_MS, RETRY_MS * 2 ** this.catchUpFailures++);
        this.catchUpTimer = setTimeout(() => {
          this.catchUpTimer = null;
          this.startCatchUp(nc, journalSeq, stream);
        }, wait);
      })
      .finally(() => {
        this.writing = null;
        if (further) this.startCatchUp(nc, journalSeq, stream);
        else this.kick();
      });
  }

  private async catchUp(nc: NatsConnection, journalSeq: number, stream?: string): Promise<boolean> {
    // A catch-up tried again goes on from where the last one got to: its position and files are kept.
    if (!this.file) await this.openFiles();
    // A window of journal batches at a time: a long journal is neither held in memory as one text nor in the way of a stop.
    while (this.pos.seq < journalSeq) {
      if (this.closing) return false;
      const until = Math.min(journalSeq, this.pos.seq + CATCH_UP_WINDOW);
      let text = '';
      await replayJournal(nc, this.pos.seq + 1, (events) => (text += scoreboardLines(events, this.deltasOf)), until, stream);
      await this.write(text, until);
    }
    return true;
  }

  private async openFiles(): Promise<void> {
    await mkdir(dirname(this.path), { recursive: true });
    try {
      this.pos = JSON.parse(await readFile(`${this.path}.pos`, 'utf8')) as Position;
    } catch (err) {
      // No position yet, or a torn one: the file is derived from the journal, so it is written again from the start.
      // Anything else (no permission, a directory there) is the operator's to see.
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT' && !(err instanceof SyntaxError)) throw err;
      this.pos = { seq: 0, bytes: 0 };
    }
    this.file = await open(this.path, 'a+');
    this.posFile = await open(`${this.path}.pos`, 'a+').then(async (fh) => {
      await fh.close();
      return open(`${this.path}.pos`, 'r+');
    });
    const size = (await this.file.stat()).size;
    if (size > this.pos.bytes) await this.file.truncate(this.pos.bytes);
    // Shorter than its position says (deleted, or cut by hand): lines the position counts as written are gone, and
    // only writing it all again from the journal brings them back (kept as it was, those conversions never came back).
    if (size < this.pos.bytes) {
      await this.file.truncate(0);
      this.pos = { seq: 0, bytes: 0 };
    }
  }

  /** Queues the lines of a durable journal batch; appends happen in journal order. */
  append(events: readonly JournalEvent[], journalSeq: number): void {
    this.pendingSeq = journalSeq;
    if (!this.ready && this.pendingBytes > MAX_PENDING_BYTES) {
      // A catch-up failing for long: the lines are in the journal, and the next catch-up goes as far as these.
      this.pendingText = [];
      this.pendingBytes = 0;
      this.catchUpTo = journalSeq;
      return;
    }
    const text = scoreboardLines(events, this.deltasOf);
    this.pendingText.push(text);
    this.pendingBytes += text.length;
    this.kick();
  }

  private kick(now = false): void {
    if (!this.ready || this.writing || this.timer || this.pendingSeq <= this.pos.seq) return;
    const wait = this.lastAppendAt + APPEND_EVERY_MS - Date.now();
    if (wait > 0 && !now) {
      this.timer = setTimeout(() => {
        this.timer = null;
        this.kick();
      }, wait);
      return;
    }
    this.lastAppendAt = Date.now();
    const text = this.pendingText.join('');
    const seq = this.pendingSeq;
    this.pendingText = [];
    this.pendingBytes = 0;
    this.writing = this.write(text, seq)
      .catch((err: unknown) => {
        // The lines go again, first, after a pause: dropped, the next write moved the position past them and no
        // start ever wrote them (a disk full for a moment cost the scoreboard those conversions for good).
        if (err instanceof LinesNotWritten) {
          this.pendingText.unshift(text);
          this.pendingBytes += text.length;
          this.lastAppendAt = Date.now() + RETRY_MS;
        }
        this.failed(err);
      })
      .finally(() => {
        this.writing = null;
        this.kick();
      });
  }

  /** Resolves once everything queued so far is written. */
  async flush(): Promise<void> {
    for (;;) {
      if (this.timer) {
        clearTimeout(this.timer);
        this.timer = null;
        this.kick(true);
      }
      if (!this.writing) return;
      await this.writing;
    }
  }

  async close(): Promise<void> {
    this.closing = true;
    if (this.catchUpTimer) clearTimeout(this.catchUpTimer);
    this.catchUpTimer = null;
    await this.flush();
    await this.file?.close();
    await this.posFile?.close();
  }

  private async write(text: string, seq: number): Promise<void> {
    // What a failed write left past the position (part of its lines) goes before they are written again.
    if (this.torn) {
      await this.file!.truncate(this.pos.bytes);
      this.torn = false;
    }
    // The lines are ASCII (numbers, op names): latin1 writes them byte for byte, and their length is their size.
    if (text) {
      try {
        await this.file!.write(text, null, 'latin1');
      } catch (err) {
        this.torn = true;
        throw new LinesNotWritten(err);
      }
    }
    this.pos = { seq, bytes: this.pos.bytes + text.length };
    await this.posFile!.write(JSON.stringify(this.pos).padEnd(POSITION_WIDTH), 0, 'utf8');
    this.succeeded();
  }
}
