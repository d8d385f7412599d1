import { readFileSync, unlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { ConfigError } from '../config/config.js';

/** Where the launcher running on a DATA_DIR writes its pid and start time. */
export const launcherLockFile = (dataDir: string): string => join(dataDir, 'launcher.pid');

/**
 * A process's start time (/proc/<pid>/stat field 22), null when there is no
 * such process: with its pid it names one process for good, where a pid alone
 * may be another process's by now (a launcher killed long ago).
 */
function startTime(pid: number): string | null {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // Field 2, the command name, is in parentheses and may hold spaces: count from the last ')'; field 3 comes first.
    return stat.slice(stat.lastIndexOf(')') + 2).split(' ')[19] ?? null;
  } catch {
    return null;
  }
}

/**
 * Takes DATA_DIR for this launcher, or throws a ConfigError naming the
 * launcher that holds it. Before anything else touches DATA_DIR: a second
 * launcher took the first one's nats-server (DATA_DIR/nats.pid) for an
 * orphan and stopped it. A lock whose process is gone (a launcher killed
 * outright) is taken over. Returns the release, for the way out.
 */
export function takeLauncherLock(dataDir: string): () => void {
  const file = launcherLockFile(dataDir);
  const mine = `${process.pid} ${startTime(process.pid)}\n`;
  for (let attempt = 0; ; attempt++) {
    try {
      writeFileSync(file, mine, { flag: 'wx' });
      break;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') {
        throw new ConfigError(`DATA_DIR=${dataDir}: cannot write ${file}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
      }
    }
    let held = '';
    try {
      held = readFileSync(file, 'utf8');
    } catch (err) {
      // Released meanwhile: try again.
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
    }
    const [pid, started] = held.trim().split(' ');
    if (pid && started && startTime(Number(pid)) === started) {
      throw new ConfigError(`DATA_DIR=${dataDir} is in use by the launcher running as pid ${pid} (${file}): stop that one first, or give this one another DATA_DIR`);
    }
    // Two launchers taking over the same stale lock at once: the one that loses sees the other's at its next attempt.
    if (attempt >= 3) throw new ConfigError(`DATA_DIR=${dataDir}: cannot take ${file} (another launcher starting at the same time? if none is, remove it)`);
    if (held !== '') {
      try {
        unlinkSync(file);
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
      }
    }
  }
  return () => {
    try {
      // Only our own: never a lock a later launcher took over.
      if (readFileSync(file, 'utf8') === mine) unlinkSync(file);
    } catch {
      // Gone already.
    }
  };
}
