import { readFileSync } from 'node:fs';

/** Linux's clock ticks per second for /proc/<pid>/stat times (`getconf CLK_TCK`: 100 on every x86_64 kernel). */
const TICKS_PER_S = 100;

export interface CpuTime {
  user: number;
  system: number;
}

/** CPU seconds a process has used so far in user and kernel mode, from /proc; 0 once it is gone. */
export function cpuSeconds(pid: number): CpuTime {
  try {
    // The command name (field 2) may hold spaces: count fields after its closing parenthesis.
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return { user: Number(f[11]) / TICKS_PER_S, system: Number(f[12]) / TICKS_PER_S };
  } catch {
    return { user: 0, system: 0 };
  }
}

/** Starts counting the CPU of `pids`; the returned function gives each one's seconds since. */
export function cpuMeter(pids: Record<string, number>): () => Record<string, CpuTime> {
  const start = Object.fromEntries(Object.entries(pids).map(([k, pid]) => [k, cpuSeconds(pid)]));
  return () =>
    Object.fromEntries(
      Object.entries(pids).map(([k, pid]) => {
        const now = cpuSeconds(pid);
        return [k, { user: now.user - start[k]!.user, system: now.system - start[k]!.system }];
      }),
    );
}
