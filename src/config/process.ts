/** Set by the launcher in each service's environment: its pid. */
export const LAUNCHER_PID_VAR = 'ETF_LAUNCHER_PID';

/**
 * What a process takes from its environment besides its settings: how it
 * logs (before its config is read, too) and who launched it. Read once by its
 * entry point and passed down.
 */
export interface ProcessSettings {
  /** LOG_LEVEL (default info): the level until the process's config says otherwise. */
  logLevel: string;
  /** Pretty lines for a person, or JSON (LOG_FORMAT; unset: pretty at a terminal). */
  pretty: boolean;
  /** Colours in pretty lines: a terminal, or FORCE_COLOR=1 (a pipe the launcher passes on to one). */
  color: boolean;
  /** The launcher's pid (ETF_LAUNCHER_PID): the process stops once that launcher is gone. */
  launcherPid: number | null;
}

/**
 * `LOG_FORMAT=pretty|json` decides; unset, people at a terminal get pretty
 * lines and pipes (log collectors, the tests that read the engine's lines)
 * get JSON. A value other than those is refused by loadConfig.
 */
export function wantsPretty(env: NodeJS.ProcessEnv, isTTY: boolean): boolean {
  const f = (env.LOG_FORMAT ?? '').toLowerCase();
  if (f === 'json') return false;
  if (f === 'pretty') return true;
  return isTTY;
}

export function processSettings(env: NodeJS.ProcessEnv = process.env, isTTY = Boolean(process.stdout.isTTY)): ProcessSettings {
  const launcher = Number(env[LAUNCHER_PID_VAR]);
  return {
    logLevel: env.LOG_LEVEL || 'info',
    pretty: wantsPretty(env, isTTY),
    color: isTTY || env.FORCE_COLOR === '1',
    launcherPid: Number.isInteger(launcher) && launcher > 0 ? launcher : null,
  };
}
